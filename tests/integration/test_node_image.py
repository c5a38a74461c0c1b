"""The Node toolchain images: pinned node/npm that work offline in a build-like sandbox.

Every probe runs in a throwaway container hardened like a build (network none, uid 1000 or
2000, read-only root, every capability dropped, HOME and the workspace on tmpfs), so what
passes here is what the node recipe will see.
"""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from reprobuild import images
from reprobuild.ecosystems.node.toolchain import NODE_WHEEL, node_images
from reprobuild.images import build as image_build
from reprobuild.progress import SilentProgress

from .conftest import run_probe

pytestmark = pytest.mark.docker

PROBE_LABELS = {"org.reprobuild.role": "test-probe", "org.reprobuild.probe": "node-image"}
EXPECTED = {"node": ("v24.19.0", "11.17.0"), "node-22": ("v22.20.0", "10.9.3")}

# A local package with a nested bin, packed offline; prints the tarball's sha256 last.
PACK = r"""
set -eu
umask "$UMASK"
mkdir -p /work/pkg/lib /work/out
cd /work/pkg
printf '%s\n' '{"name":"demo-mcp","version":"1.2.3","bin":{"demo-mcp":"lib/cli.js"},' \
    '"files":["lib"],"scripts":{"build":"node build.js"}}' > package.json
printf '%s\n' 'require("fs").writeFileSync("lib/cli.js", "#!/usr/bin/env node\nconsole.log(1)\n")' \
    > build.js
printf 'docs\n' > README.md
npm run build --if-present
npm pack --offline --pack-destination /work/out
tar -tzvf /work/out/demo-mcp-1.2.3.tgz
echo "sha256 $(sha256sum /work/out/demo-mcp-1.2.3.tgz | cut -d' ' -f1)"
"""

# npm workspaces, offline: from a workspace directory, `npm ci` installs at the root (npm
# finds it), then the workspace builds and packs, as recipes/node.toml does.
WORKSPACES = r"""
set -eu
mkdir -p /work/repo/src/lib /work/repo/src/server /work/out
cd /work/repo
printf '%s\n' '{"name":"mono","private":true,"workspaces":["src/*"]}' > package.json
printf '%s\n' '{"name":"@mono/lib","version":"1.0.0","main":"index.js"}' > src/lib/package.json
printf '%s\n' 'module.exports = () => "from lib"' > src/lib/index.js
printf '%s\n' '{"name":"@mono/server","version":"2.0.0","files":["dist"],' \
    '"dependencies":{"@mono/lib":"1.0.0"},"scripts":{"build":"node build.js"}}' \
    > src/server/package.json
printf '%s\n' 'const fs = require("fs"); fs.mkdirSync("dist", {recursive: true});' \
    'fs.writeFileSync("dist/out.txt", require("@mono/lib")() + "\n")' > src/server/build.js
npm install --offline --no-audit --no-fund
[ -f package-lock.json ]
rm -rf node_modules
cd src/server
echo "prefix $(npm prefix)"
npm ci --offline
[ -L /work/repo/node_modules/@mono/lib ] && [ ! -e node_modules ]
npm run build --if-present
npm pack --offline --cache "$HOME/.npm" --pack-destination /work/out
tar -xzOf /work/out/mono-server-2.0.0.tgz package/dist/out.txt
"""


def run(client: docker.DockerClient, image: images.ToolchainImage, script: str, *,
        uid: int = 1000, env: dict[str, str] | None = None,
        timeout: float = 180) -> tuple[int, str]:
    """Run ``sh -c script`` hardened like a build; always remove the container."""
    home = "/home/builder" if uid == 1000 else "/home/rebuilder"
    return run_probe(client, image.image_id, script, uid=uid,
                     env={"HOME": home, **(env or {})}, timeout=timeout,
                     tmpfs={"/tmp": "size=64m,exec", home: f"size=64m,uid={uid},gid={uid}",
                            "/work": f"size=64m,exec,uid={uid},gid={uid}"},
                     labels=PROBE_LABELS)


def ok(client: docker.DockerClient, image: images.ToolchainImage, script: str, *,
       uid: int = 1000, env: dict[str, str] | None = None) -> str:
    code, output = run(client, image, script, uid=uid, env=env)
    assert code == 0, output
    return output


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def node_image(request: pytest.FixtureRequest,
               client: docker.DockerClient) -> images.ToolchainImage:
    name: str = request.param
    return image_build.ensure_image(client, name, progress=SilentProgress())


@pytest.fixture(autouse=True)
def _no_probe_left(client: docker.DockerClient) -> Iterator[None]:
    yield
    left = client.containers.list(all=True,
                                  filters={"label": "org.reprobuild.probe=node-image"})
    assert left == []


def test_versions_are_the_pinned_ones(client: docker.DockerClient,
                                      node_image: images.ToolchainImage) -> None:
    node_version, npm_version = EXPECTED[node_image.name]
    definitions = images.load_definitions()
    assert node_image.tag == images.image_tag(definitions[node_image.name], definitions)
    assert f"v{node_images(definitions)[node_image.name]}" == node_version
    assert dict(node_image.versions)[NODE_WHEEL] == node_version.removeprefix("v")
    assert node_image.path_env.startswith("/opt/reprobuild/node/bin:")
    out = ok(client, node_image, "for t in node npm npx; do command -v $t; done; "
             "node --version; npm --version; "
             "npx --version; npm config get update-notifier")
    assert out.split() == ["/opt/reprobuild/node/bin/node", "/opt/reprobuild/node/bin/npm",
                           "/opt/reprobuild/node/bin/npx", node_version, npm_version,
                           npm_version, "false"]


def test_npm_pack_offline_is_reproducible(client: docker.DockerClient,
                                          node_image: images.ToolchainImage) -> None:
    a = ok(client, node_image, PACK, env={"UMASK": "0022", "TZ": "UTC", "LC_ALL": "C.UTF-8"})
    b = ok(client, node_image, PACK, uid=2000,
           env={"UMASK": "0002", "TZ": "Etc/GMT-14", "LC_ALL": "et_EE.UTF-8",
                "LD_PRELOAD": "/opt/reprobuild/lib/libfaketime.so.1", "FAKETIME": "+398d"})
    listing = [line for line in a.splitlines() if "package/" in line]
    assert [line.split()[-1] for line in listing] == [
        "package/lib/cli.js", "package/package.json", "package/README.md"]
    for line in listing:
        assert "0/0" in line and "1985-10-26 08:15" in line  # npm's fixed owner and mtime
        # Modes come from the file system minus group/other write bits, so umask 0002 does
        # not leak. (npm does not add the x bit to a bin in a subdirectory when packing a
        # directory: the file system decides, and build.js wrote it 0644/0664.)
        assert line.startswith("-rw-r--r--")
    digest_a = a.strip().splitlines()[-1]
    assert digest_a.startswith("sha256 ")
    assert digest_a == b.strip().splitlines()[-1], (a, b)


def test_workspace_install_from_the_workspace_directory(
        client: docker.DockerClient, node_image: images.ToolchainImage) -> None:
    out = ok(client, node_image, WORKSPACES)
    assert "prefix /work/repo\n" in out
    assert out.strip().endswith("from lib")

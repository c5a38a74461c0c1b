"""Pinned toolchain images: definitions in ``containers/``, built locally, cached by hash.

Two builds are only comparable if they ran on the same toolchain, and a verdict is only
worth something if someone else can get that toolchain again. So every image is described
by a small TOML definition with exact Debian versions and a hash-locked pip requirements
file, and is tagged ``reprobuild/<name>:<first 16 hex of the definition hash>``: a warm run
costs one image inspect, and any change to a pin, a lock or the base produces a new tag.

* :mod:`.definitions` (pure, re-exported here): parsing, checking and hashing definitions,
  the exact commands that would build them, and which images can build at the same time;
* :mod:`.build` (Docker): ``ensure_image``/``ensure_images`` (independent images built
  concurrently), ``list_images``, ``prune_images``.
"""

from reprobuild.images.definitions import (
    IMAGE_LABEL,
    KINDS,
    BuildStep,
    ImageDefinition,
    LockedRequirement,
    RegistryBasePlan,
    ToolchainImage,
    ToolchainImageInfo,
    build_waves,
    cache_root,
    containers_dir,
    default_jobs,
    definition_hash,
    image_tag,
    layer_script,
    load_definitions,
    lock_text,
    mmdebstrap_command,
    parse_lock,
    pip_download_command,
    plan_builds,
    registry_base_plan,
    toolchain_names,
)

__all__ = [
    "IMAGE_LABEL",
    "KINDS",
    "BuildStep",
    "ImageDefinition",
    "LockedRequirement",
    "RegistryBasePlan",
    "ToolchainImage",
    "ToolchainImageInfo",
    "build_waves",
    "cache_root",
    "containers_dir",
    "default_jobs",
    "definition_hash",
    "image_tag",
    "layer_script",
    "load_definitions",
    "lock_text",
    "mmdebstrap_command",
    "parse_lock",
    "pip_download_command",
    "plan_builds",
    "registry_base_plan",
    "toolchain_names",
]

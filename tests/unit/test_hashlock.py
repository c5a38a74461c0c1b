"""The one strict grammar for hashed locks (image locks and ``[fetch] lock``)."""

from __future__ import annotations

import pytest

from reprobuild.errors import RecipeError
from reprobuild.hashlock import parse_hashed_lock

A, B = "a" * 64, "b" * 64


def test_comments_continuations_and_markers() -> None:
    text = (f"# header\n--index-url https://pypi.org/simple#not-a-comment\n"
            f"foo==1.0 \\\n    --hash=sha256:{A} # trailing\n"
            f"bar==2 ; python_version < '3.12' --hash=sha256:{A}\n"
            f"bar==3 ; python_version >= '3.12' --hash=sha256:{B}\n")
    lock = parse_hashed_lock(text, "l.txt", options=True, markers=True)
    assert lock.options == ("--index-url https://pypi.org/simple#not-a-comment",)
    assert [(p.name, p.version, p.line) for p in lock.pins] == [("foo", "1.0", 3),
                                                                ("bar", "2", 5), ("bar", "3", 6)]
    assert lock.pins[0].hashes == (f"sha256:{A}",)
    assert lock.pins[1].marker == 'python_version < "3.12"'


@pytest.mark.parametrize(("text", "message"), [
    (f"foo==1 --hash=sha256:{A}\nFoo==2 --hash=sha256:{B}\n", r"l:2: Foo is pinned twice"),
    (f"foo~=1.0 --hash=sha256:{A}\n", "not pinned to one version"),
    (f"foo===1.0 --hash=sha256:{'a' * 63}\n", "not accepted here"),
    ("--extra-index-url https://x.example/simple\n", "option --extra-index-url is not allowed"),
    (f"foo==1 ; os_name == 'posix' --hash=sha256:{A}\n", "has an environment marker"),
    ("\n# only comments\n", "the lock pins nothing"),
])
def test_image_locks_are_stricter(text: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        parse_hashed_lock(text, "l")


def test_the_same_requirement_under_another_marker_is_not_a_duplicate() -> None:
    text = (f"foo==1 ; python_version < '3.12' --hash=sha256:{A}\n"
            f"foo==1 ; python_version < '3.12' --hash=sha256:{B}\n")
    with pytest.raises(RecipeError, match="pinned twice"):
        parse_hashed_lock(text, "l", markers=True)
    assert parse_hashed_lock(f"foo===1.0 --hash=sha512:{'c' * 128}\n", "l").pins[0].version \
        == "1.0"

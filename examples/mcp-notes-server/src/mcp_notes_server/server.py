"""MCP server exposing a tiny in-memory notebook over stdio."""

from __future__ import annotations

from mcp.server.fastmcp import FastMCP

mcp = FastMCP("notes")
_NOTES: dict[str, str] = {}


@mcp.tool()
def add_note(title: str, body: str) -> str:
    """Store a note under a title, replacing any earlier one."""
    _NOTES[title] = body
    return f"saved {title!r} ({len(body)} characters)"


@mcp.tool()
def list_notes() -> list[str]:
    """Titles of all notes, sorted."""
    return sorted(_NOTES)


@mcp.resource("notes://{title}")
def read_note(title: str) -> str:
    """The body of one note."""
    return _NOTES.get(title, "")


def main() -> None:
    """Run the server on stdio."""
    mcp.run()


if __name__ == "__main__":
    main()

"""reprobuild: was this MCP server release built from the source it claims?"""

__version__ = "0.1.0"

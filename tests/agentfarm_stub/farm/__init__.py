"""Stand-in for AgentFarm's package (see ../README.md)."""

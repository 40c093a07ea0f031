"""Development tools: the one-command dev stack, the embedded Redis and the demo campaign."""

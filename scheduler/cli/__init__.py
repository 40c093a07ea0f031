"""The `broadcast` command: one module per noun, talking to the API through `client`."""

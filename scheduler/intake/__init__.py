"""What comes in: validating and storing messages, campaigns and their uploaded recipient lists."""

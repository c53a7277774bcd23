"""The server's default settings, in a module that imports nothing heavy: `ftlab serve
--help` shows them without loading torch, and the server's parts share one value."""

DEFAULT_MAX_UPLOAD_MB = 512  # OpenAI's limit for one uploaded file
# Chat answers generated together when requests arrive at once (ftlab.server.batching).
# Bigger batches use a CPU better, but a request that arrives while one runs waits for
# its longest answer; 16 is what evaluation uses too.
DEFAULT_CHAT_BATCH = 16

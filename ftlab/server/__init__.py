"""The local OpenAI-compatible fine-tuning server (`ftlab serve`).

From a notebook: `server = start_server()`, then `OpenAI(base_url=server.base_url,
api_key="local")`, and `server.stop()` (or `stop_server()`) at the end.
"""

from ftlab.server.launcher import ServerHandle, start_server, stop_server

__all__ = ["ServerHandle", "start_server", "stop_server"]

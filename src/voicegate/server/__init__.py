"""The listening side: one port for HTTP and the voice WebSockets, under uvicorn."""

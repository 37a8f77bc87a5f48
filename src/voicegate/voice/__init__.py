"""The voice layer: admission, live connections and the client protocol."""

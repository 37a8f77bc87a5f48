"""Who a client is: tokens, and the plan that decides whether it may use voice."""

from voicegate.auth.tokens import Identity, TokenVerifier, mint_token

__all__ = ["Identity", "TokenVerifier", "mint_token"]

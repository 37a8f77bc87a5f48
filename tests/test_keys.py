"""Key names: one hash tag per user id, whatever the id (issue 10 item 3)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from voicegate.storage.keys import Keys, user_tag

# Ids made of the plain alphabet, so that hypothesis also tries tags that look like each other.
plain = st.text(alphabet="ab~{}:-_.@0\ud800", max_size=8)
anything = st.text() | plain


@given(anything, anything)
def test_two_ids_never_share_a_tag(a: str, b: str) -> None:
    if a != b:
        assert user_tag(a) != user_tag(b)


@given(anything)
def test_a_tag_is_one_cluster_hash_tag(user_id: str) -> None:
    tag = user_tag(user_id)
    assert tag and "{" not in tag and "}" not in tag
    prefix = Keys(user_id).prefix
    # Redis Cluster hashes what lies between the first `{` and the next `}`: the whole tag.
    assert prefix[prefix.index("{") + 1 : prefix.index("}")] == tag


def test_the_collisions_of_the_old_digest_are_gone() -> None:
    ids = ["x{y", "", "h" + "0" * 24, "~", "~78", "x", "ünï"]
    assert len({user_tag(i) for i in ids}) == len(ids)
    assert user_tag("alice@example.com") == "alice@example.com"  # readable in redis-cli

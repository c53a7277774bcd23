"""What the training tests share: twelve hand-labelled support messages and a tiny run's config."""

from __future__ import annotations

from ftlab.training import TrainConfig

MESSAGES = [
    ("where is my order AC-10001?", "order_status", "AC-10001", "neutral"),
    ("please cancel AC-10002, I ordered twice", "cancel_order", "AC-10002", "neutral"),
    ("The zipper broke after one day. Awful.", "complaint", None, "negative"),
    ("Do you have the rain jacket in size L?", "product_question", None, "neutral"),
    ("thank you so much, love the boots!", "other", None, "positive"),
    ("I'd like to return the tent from ac-10003", "return_request", "AC-10003", "neutral"),
    ("my refund for AC-10004 never arrived!!", "refund_status", "AC-10004", "negative"),
    ("ship AC-10005 to my office instead please", "change_address", "AC-10005", "neutral"),
    ("has AC-10006 shipped yet", "order_status", "AC-10006", "neutral"),
    ("Are your socks machine washable?", "product_question", None, "neutral"),
    ("stop order AC-10007 right now", "cancel_order", "AC-10007", "negative"),
    ("great service, thanks", "other", None, "positive"),
]


def tiny(data: str, out, **changes) -> TrainConfig:
    """A few seconds' run: small batches, rank 4."""
    settings = {
        "data": data,
        "out": str(out),
        "epochs": 2,
        "batch_size": 4,
        "rank": 4,
        "alpha": 8,
        "lr": 3e-3,
        **changes,
    }
    return TrainConfig(**settings)

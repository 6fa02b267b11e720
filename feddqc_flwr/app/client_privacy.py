"""The client's side of differential privacy: Flower's clipping mods on train replies, noisy histograms.

`client_clipping_mod` is registered on the `train` handler only (`@app.train(mods=...)`): Flower's
mods need the `clipping_norm` that only the DP wrapper's train messages carry, and the `query.*`
and `evaluate` replies hold no adapter. It picks the mod `dp-mode` names, so one ClientApp
serves every mode.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Context, Message
from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable

CLIENT_MODS = {"client-fixed": fixedclipping_mod, "client-adaptive": adaptiveclipping_mod}


def client_clipping_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Clip the train reply's adapter update with Flower's mod for `dp-mode`; other modes pass through.

    Flower's clip divides by the update's norm, so an unchanged adapter (a client with nothing to
    train, whose reply weighs 0 and is left out of the aggregate) raises ZeroDivisionError: that
    reply is returned with weight 0, so the server leaves it out even though it lacks the clipping
    bit that client-adaptive's server wrapper expects on every aggregated reply.
    """
    mod = CLIENT_MODS.get(str(ctxt.run_config.get("dp-mode", "none")))
    if mod is None:
        return call_next(msg, ctxt)
    replies: list[Message] = []

    def train_once(message: Message, context: Context) -> Message:
        replies.append(call_next(message, context))
        return replies[-1]

    try:
        return mod(msg, ctxt, train_once)
    except ZeroDivisionError:
        if replies and _unchanged(msg, replies[0]):
            replies[0].content["metrics"]["num-examples"] = 0
            return replies[0]
        raise


def _unchanged(msg: Message, reply: Message) -> bool:
    sent, back = msg.content["arrays"], reply.content["arrays"]
    return all(np.array_equal(sent[k].numpy(), back[k].numpy()) for k in sent)


def noisy_counts(counts: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """Histogram counts with Laplace(1/epsilon) noise per bin, rounded, possibly negative.

    Adding or removing one row changes one bin by 1 (L1 sensitivity 1), so the noisy vector is
    epsilon-DP for that row; rounding is post-processing. No floor here: flooring each client's
    bins at 0 would add about 0.4/epsilon rows to every empty bin in the range, so the server sums
    the signed counts (the noise averages out) and reads lambda off that sum.
    """
    return np.rint(counts + rng.laplace(0.0, 1.0 / epsilon, size=counts.shape)).astype(np.int64)

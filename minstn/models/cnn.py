"""The CNN baseline: the classifier on the whole canvas, with one head per digit (the paper's section IV).

Shape legend:
    N   canvases
    P   digit positions (4)

    images (N, 1, 100, 100) -> classifier (no down-sampling: the CNN always sees 100x100)
    -> (N, 40) -> logits (N, 4, 10): head k predicts digit k.

There is no spatial transformer, so `downsample` does not apply: build_model accepts any
valid d (1..4) for a uniform call site, ignores it, and the model reports downsample = 1.
"""
from __future__ import annotations

from minstn.models.base import CANVAS, Model
from minstn.models.classifier import classifier_backward, classifier_forward, init_classifier

__all__ = ["CNN"]


class CNN(Model):
    """Classifier on the 100x100 canvas with four 10-way heads. Options: dropout (0.5)."""

    name = "cnn"

    def _init_params(self, rng):
        return init_classifier(rng, CANVAS, heads=self.digits, head_init=self.options["head_init"],
                               filters=self.options["cls_filters"])

    def forward(self, images, train: bool = True, rng=None):
        """images (N, 1, 100, 100) -> (logits (N, 4, 10), cache). rng: dropout generator (train only)."""
        images = self._images(images)
        rng = self._dropout_rng(train, rng)
        N = images.shape[0]
        out, c_cls = classifier_forward(self.params, images, self.options["dropout"], train, rng)  # (N, 40)
        logits = out.reshape(N, self.digits, 10)                                                   # (N, P, 10)
        return logits, c_cls

    def backward(self, dlogits, cache) -> None:
        """Fills self.grads from dlogits (N, 4, 10); the canvas gets no gradient."""
        N = dlogits.shape[0]
        dout = dlogits.reshape(N, self.digits * 10)                                                # (N, 10 P)
        classifier_backward(dout, cache, self.grads, need_dx=False)

"""What a training run did, epoch by epoch, and the health of its result
(:mod:`bnn_toroid.diagnostics`)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class History:
    """What :func:`fit` did, one entry per epoch, and the health of the result.

    ``loss[e]``: mean training loss over epoch ``e``'s minibatches (the data term only;
    for ``rsgd`` averaged over replicas, without the coupling; for ``adv``'s first
    phase, on the augmented data). ``train_error[e]``: fraction of the training set
    (true labels) misclassified by the model (for ``rsgd``: the centre, with
    recomputed BatchNorm statistics) in eval mode at the end of epoch ``e``.
    ``lr[e]``: the weights' learning rate at the start of epoch ``e``. ``phase[e]``:
    ``"adv_init"`` for the adversarial pre-training epochs of ``adv`` (followed by
    ``"sgd"`` epochs), else the method name.

    ``rsgd`` only: ``gamma[e]`` (coupling at the end of epoch ``e``),
    ``replica_distance[e]`` (mean over replicas of ``‖w_a − w̄‖ / sqrt(n_params)`` over
    all trainable parameters), ``replica_hamming[e]`` (binary models: mean over replicas
    of the fraction of binary weights whose sign differs from the centre's).
    ``adv`` only: ``random_label_error[e]`` for the pre-training epochs, the error on
    the random-label, pixel-zeroed copy. ``seconds``: wall time of the whole call.

    ``diagnostics`` (:func:`bnn_toroid.diagnostics.diagnose`): per layer the fraction of
    signs changed from the initialisation (binary) or the relative weight change (real),
    constant and dead hidden units, and for ``adv`` ``random_label_error`` /
    ``random_labels_fitted`` / ``adv_epochs_run`` and ``signs_changed_since_adv``, for
    ``rsgd`` the final ``replica_distance`` and ``replica_hamming``. :meth:`summary`
    gives it as one line.
    """

    method: str
    loss: list = field(default_factory=list)
    train_error: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    phase: list = field(default_factory=list)
    gamma: list = field(default_factory=list)
    replica_distance: list = field(default_factory=list)
    replica_hamming: list = field(default_factory=list)
    random_label_error: list = field(default_factory=list)
    seconds: float = 0.0
    config: dict = field(default_factory=dict)
    diagnostics: dict = field(default_factory=dict)

    def summary(self) -> str:
        """The diagnostics as one line (empty before :func:`fit` filled them)."""
        from ..diagnostics import summary
        return summary(self.diagnostics) if self.diagnostics else ""

    @property
    def epochs(self) -> int:
        return len(self.loss)


def health(model, x, initial, extra: dict, adv_start=None) -> dict:
    """``History.diagnostics``: :func:`bnn_toroid.diagnostics.diagnose` of ``model``
    against its ``initial`` snapshot, with the method's ``extra`` entries, and for ADV
    the signs changed since the end of its pre-training (``adv_start``)."""
    from ..diagnostics import diagnose
    out = {**diagnose(model, x, initial), **extra}
    if adv_start is not None:
        out["signs_changed_since_adv"] = diagnose(model, x[:1], adv_start)["signs_changed"]
    return out

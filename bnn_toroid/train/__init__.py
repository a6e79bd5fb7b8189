"""Training loops that find minima of different flatness (Pittorino et al., ICML 2022,
"Deep Networks on Toroids", §5; docs/methods.md, "Training").

:func:`fit` trains a torch model in place with one of

- ``"sgd"``: the base optimiser (SGD with Nesterov momentum by default, Adam on request)
  with a cosine-annealed learning rate;
- ``"rsgd"``: replicated SGD, ``y`` independently initialised replicas elastically
  coupled to their centre (Pittorino et al., ICLR 2021, "Entropic gradient descent
  algorithms and wide flat minima"; Baldassi et al., PNAS 2020); the centre is the
  solution, flatter than SGD's;
- ``"adv"``: adversarial initialisation (Liu, Papailiopoulos & Achlioptas, NeurIPS 2020,
  "Bad global minima exist and SGD can reach them"): fit random labels first, then the
  true ones; sharper minima;
- ``"sam"``: sharpness-aware minimisation (Foret et al., ICLR 2021) **[ours]**.

Binary models (any model containing :class:`~bnn_toroid.nn.BinaryLinear` or
:class:`~bnn_toroid.nn.BinaryConv2d`) are trained BinaryNet style (Hubara, Courbariaux
et al., NeurIPS 2016): the optimiser updates latent float weights (Glorot-scale at
initialisation), the forward pass uses their sign with a straight-through estimator
(:func:`bnn_toroid.nn.sign_ste`), and after every optimiser step every module with a
``clip_()`` method clamps its latent weights to [-1, 1]. BatchNorm parameters sit in
their own parameter group with their own learning rate. Real-valued models train
normally. Every run ends with :mod:`bnn_toroid.diagnostics` in ``History.diagnostics``.

Inputs are used as given, converted to float32 batch by batch (uint8 images become
0..255): models that want standardised inputs carry a :class:`~bnn_toroid.nn.Normalize`
module built from :func:`input_norm`.

The package, one concern a module:

==================  ====================================================================
:mod:`.loop`        :func:`fit`, the training loop, and :func:`check_options`
:mod:`.options`     the recipe's defaults (:func:`defaults`) and the checks of fit's options
:mod:`.data`        checked tensors, minibatches, the loss, :func:`evaluate`,
                    :func:`recompute_bn_stats`, :func:`input_norm`, :func:`is_binary`
:mod:`.optim`       the base optimisers, their parameter groups, the cosine schedule
:mod:`.sgd`         epochs of SGD or SAM
:mod:`.adv`         ADV's random-label pre-training and :func:`adversarial_copy`
:mod:`.rsgd`        replicated SGD
:mod:`.history`     :class:`History` and the health report of the result
==================  ====================================================================
"""
from .adv import adversarial_copy
from .data import _loss, evaluate, input_norm, is_binary, recompute_bn_stats
from .history import History
from .loop import check_options, fit
from .optim import _param_groups, _train_params  # private names the tests reach as train._*
from .options import METHODS, OPTIMIZERS, REPLICA_INITS, defaults
from .rsgd import _balanced_gamma0, _replicas

__all__ = ["fit", "History", "evaluate", "recompute_bn_stats", "input_norm", "is_binary",
           "adversarial_copy", "check_options", "METHODS", "OPTIMIZERS", "REPLICA_INITS", "defaults"]

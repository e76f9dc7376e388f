"""lr_jax: Label Refinery (Bagherinezhad et al. 2018) in JAX/Flax."""

__version__ = "0.1.0"

from lr_jax import xla_cpu as _xla_cpu  # noqa: E402  (sets XLA_FLAGS before any JAX backend starts)
from lr_jax import xla_gpu as _xla_gpu  # noqa: E402  (likewise, where a GPU plugin is installed)

_xla_cpu.path()
_xla_gpu.state()

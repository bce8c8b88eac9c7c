"""t2s: text-to-sign video diffusion library (models, data, evaluation).

Subpackages are imported on demand (`from t2s.models import UNet3D`) so that
importing one does not pull in the dependencies of the others.
"""

__version__ = "0.1.0"

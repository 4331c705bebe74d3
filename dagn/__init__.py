"""dagn: JPEG compression-artifact removal with DAGN (arXiv 2405.09291). Pure PyTorch; no Ray in this package."""

from dagn.inference import Restorer, restore_image
from dagn.models import DAGN, DAGNConfig, build_model, get_config, list_variants

__all__ = ["DAGN", "DAGNConfig", "Restorer", "build_model", "get_config", "list_variants", "restore_image"]

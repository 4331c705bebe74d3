"""DAGN networks: the restoration model, its CI/CS encoders, stage-1/2 heads and the variant registry."""

from dagn.models.ci import CIAutoEncoder, CIDecoder, FeatureDiscriminator
from dagn.models.config import DAGNConfig, EncoderConfig
from dagn.models.cs import CSEncoder
from dagn.models.dagn import DAGN
from dagn.models.registry import build_model, get_config, list_variants, register_variant
from dagn.models.resnet import FeatureEncoder

__all__ = [
    "DAGN",
    "CIAutoEncoder",
    "CIDecoder",
    "CSEncoder",
    "DAGNConfig",
    "EncoderConfig",
    "FeatureDiscriminator",
    "FeatureEncoder",
    "build_model",
    "get_config",
    "list_variants",
    "register_variant",
]

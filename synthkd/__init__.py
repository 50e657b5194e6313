"""synthkd: one YAML recipe to a knowledge-distillation dataset and a trained student."""

import os

__version__ = "0.1.0"

# litellm fetches its model price map from the network at import unless told otherwise; synthkd
# must work offline, and the map shipped inside litellm is recent enough for cost estimates.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

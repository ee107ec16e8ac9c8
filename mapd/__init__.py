"""mapd: the ingest daemon of the Mesoscale Activity Project (MAP) data pipeline."""

import warnings

# mapd configures DataJoint from its own file, never from datajoint.json.
warnings.filterwarnings("ignore", message="No datajoint.json found")

__version__ = "0.2.0"

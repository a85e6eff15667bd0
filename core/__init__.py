"""VisionLens core: pretrained image classifiers, their predictions and their explanations.

Import the modules you need (`from core import cams, models`); nothing is re-exported here.
"""

__version__ = "0.1.0"

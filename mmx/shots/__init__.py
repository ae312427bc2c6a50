"""Shot detection on decoded frames (PySceneDetect detectors, TransNetV2) and shot → clip rules."""

from mmx.shots.clips import shots_to_clips
from mmx.shots.detect import ShotDetector, load_transnetv2

__all__ = ["ShotDetector", "load_transnetv2", "shots_to_clips"]

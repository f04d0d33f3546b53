"""The little that labeling, reward_model and align share.

Nothing heavy is imported here: `labeling --help` must answer in well under a second.
"""

__version__ = "0.1.0"

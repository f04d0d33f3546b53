"""`labeling` console script: every heavy import happens inside the chosen command."""

from prefloop.cli import dispatch

COMMANDS = {
    "init": ("labeling.commands:init_main", "create or upgrade a store; optionally create a project"),
    "users": ("labeling.commands:users_main", "users add NAME | list | disable NAME | enable NAME"),
    "import": ("labeling.commands:import_main", "import prompts (and responses) from JSONL/CSV/Parquet/datasets"),
    "generate": ("labeling.commands:generate_main", "sample candidate responses with one or more models"),
    "tasks": ("labeling.commands:tasks_main", "tasks build: pair or group candidates into comparison tasks"),
    "arena": ("labeling.arena_cli:main", "arena create | show: a project where two anonymous models answer live",
              "labeling.arena_cli:ArenaConfig"),
    "serve": ("labeling.serve:main", "start the labeling web app"),
    "stats": ("labeling.stats:main", "progress, agreement and position bias of a project"),
    "export": ("labeling.export_files:main", "export pairwise / ranking / raw / sft datasets"),
    "leaderboard": ("labeling.leaderboard:main", "rank models by Bradley-Terry strength, with bootstrap intervals",
                    "labeling.leaderboard_config:LeaderboardConfig"),
    "simulate": ("labeling.simulate:main", "label a project over HTTP with simulated or AI annotators",
                 "labeling.simulate:SimulateConfig"),
    "backup": ("labeling.backup:main", "a consistent copy of a store while the app writes (SQLite; pg_dump for PostgreSQL)",
               "labeling.backup:BackupConfig"),
    "demo": ("labeling.demo:main", "a demo project on the embedded model, then the labeling app"),
}


def main(argv=None) -> int:
    return dispatch("labeling", COMMANDS, argv)

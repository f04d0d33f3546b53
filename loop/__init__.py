"""The whole loop, above align: `align round` (one turn from YAML: generate, judge, export, reward model, align,
evaluate, register the policy) and `align demo` (rounds headless with simulated annotators), their configs,
inputs and reports, and the `align` console script's command table (cli.py). Imports labeling, reward_model,
align and prefloop; nothing imports loop."""

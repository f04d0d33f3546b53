#!/usr/bin/env bash
# prefloop's trainers and benches on one CUDA GPU, in one short call (about 7 minutes on an H100/H200).
#
#   OUT=/tmp/gpu_out bash bench/gpu_check.sh
#
# What it runs, in order of value (each step has its own time limit; the steps after BUDGET seconds
# are skipped and say so): the environment and the precision prefloop.hardware picks (bf16 expected);
# the quick presets of reward-model train, align sft, dpo, ppo, grpo (few steps, tiny generated data),
# each checked for final/, run.json (precision) and metrics.jsonl; `accelerate launch` with
# configs/accelerate_fsdp.yaml (and accelerate_deepspeed.yaml if deepspeed imports); the DPO, PPO and
# reward-model benches with --no-write (their tables go to the log, never into BENCHMARKS.md); then
# online-dpo and rloo. The last lines are a PASS/FAIL table. Everything lands in $OUT: log, summary.txt,
# runs.tar.gz (every run.json, metrics.jsonl and step log).
#
# Environment: SRC (code root, default this checkout), PY (python, default python3), WHL (a folder of
# wheels installed into /tmp/gpu_check_site first: the packages the machine lacks), MODEL_FILES (a folder
# with the embedded model's config.json and tokenizer files: a random-weight model of that shape is built
# as the cache's smollm2-135m-instruct, for machines without the 540 MB weights; unset: the cache as is),
# TINY=1 (a 2-layer model of that architecture and fewer steps: the CPU dry run), BUDGET and DEADLINE
# (seconds: no step starts after BUDGET, each is cut at DEADLINE), STEPS (names of the steps to run, default
# all), WORK (a folder to reuse: an earlier call's model, data and runs).
set -u
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
SRC=$(cd "${SRC:-$(dirname "$0")/..}" && pwd)
PY=${PY:-python3}
OUT=${OUT:?set OUT to the folder for the log and results}
BUDGET=${BUDGET:-360}      # no step starts after this many seconds
DEADLINE=${DEADLINE:-450}  # and every step ends by this one
mkdir -p "$OUT"
WORK=${WORK:-$(mktemp -d /tmp/gpu_check.XXXXXX)}  # a WORK of an earlier call is reused (its model, data, runs)
mkdir -p "$WORK"
LOG=$OUT/log
SUMMARY=$WORK/summary.txt
START=$SECONDS
exec > >(tee -a "$LOG") 2>&1

if [ -n "${WHL:-}" ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_check_site \
        "$WHL"/*.whl || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH=$SRC:/tmp/gpu_check_site
else
    export PYTHONPATH=$SRC${PYTHONPATH:+:$PYTHONPATH}
fi
[ -n "${MODEL_FILES:-}" ] && export PREFLOOP_CACHE=$WORK/cache  # the random-weight model is built there
cd "$SRC"
G="$PY bench/gpu_check.py"
# S: steps of the offline trainers; P: of the on-policy ones (plus their flags)
if [ "${TINY:-0}" = 1 ]; then S=2 P="2 --max-new-tokens 8" TINYFLAG=--tiny; else S=10 P=4 TINYFLAG=; fi
D=$WORK/data R=$WORK/runs
mkdir -p "$D" "$R" "$WORK/logs"

# step NAME LIMIT_S COMMAND...: run with a time limit, log to logs/NAME.log, one summary line
step() {
    local name=$1 limit=$2; shift 2
    if [ -n "${STEPS:-}" ] && [[ " $STEPS " != *" $name "* ]]; then return 0; fi  # not selected
    local elapsed=$((SECONDS - START))
    local left=$((DEADLINE - elapsed))
    if [ "$elapsed" -ge "$BUDGET" ] || [ "$left" -lt 20 ]; then
        printf '%-28s SKIPPED (t=%ss: budget %ss, deadline %ss)\n' "$name" "$elapsed" "$BUDGET" "$DEADLINE" >> "$SUMMARY"
        return 0
    fi
    [ "$left" -lt "$limit" ] && limit=$left  # every step ends by the deadline
    echo; echo "=== $name (t=${elapsed}s, limit ${limit}s): $*"
    local t0=$SECONDS
    timeout -k 5 "$limit" "$@" 2>&1 | tee "$WORK/logs/$name.log"
    local rc=${PIPESTATUS[0]}
    local verdict=PASS; [ "$rc" = 0 ] || verdict="FAIL rc=$rc"; [ "$rc" = 124 ] && verdict="TIMEOUT ${limit}s"
    printf '%-28s %-14s %4ss\n' "$name" "$verdict" $((SECONDS - t0)) >> "$SUMMARY"
    echo "=== $name: $verdict in $((SECONDS - t0))s"
}
# check RUN: final/, run.json with precision bf16 (on a GPU), metrics.jsonl
check() {
    [ -z "${STEPS:-}" ] || [ -d "$R/$1" ] || return 0
    [ -d "$R/$1" ] || { echo "[check] FAIL $1: no run directory" | tee -a "$SUMMARY"; return 0; }
    local expect=bf16; [ "${TINY:-0}" = 1 ] && expect=
    $G check "$R/$1" ${expect:+--expect $expect} | tee -a "$SUMMARY"
}

echo "=== gpu_check: $(date -u +%FT%TZ), SRC=$SRC, WORK=$WORK"
# the code that runs: a copy's COMMIT file (written where it was copied), else the checkout's HEAD
cat "$SRC/COMMIT" 2>/dev/null || git -C "$SRC" log -1 --format='commit %H %s' 2>/dev/null || true
nvidia-smi || echo "(no nvidia-smi)"
step env 60 $G env
[ -n "${MODEL_FILES:-}" ] && step model 120 $G model --files "$MODEL_FILES" $TINYFLAG
step data 60 $G data --out "$D"
step attention 60 $G attention
step generalpoints 60 $PY -m align.cli generalpoints --n 32 --n-cards 2 --out "$D/gp.jsonl"

# --- the trainers, one process each, quick presets cut to a few steps
step reward-model 90 $PY -m reward_model.cli train --config reward_model_quick --data "$D/pairwise.train.jsonl" \
    --output-dir "$R/reward_model" --max-steps $S --eval-steps $S --save-steps $S --logging-steps 1
check reward_model
step sft 90 $PY -m align.cli sft --config sft_quick --data "$D/sft.jsonl" --output-dir "$R/sft" \
    --max-steps $S --save-steps $S --logging-steps 1
check sft
step dpo 90 $PY -m align.cli dpo --config dpo_quick --data "$D/pairwise.train.jsonl" --output-dir "$R/dpo" \
    --max-steps $S --eval-steps $S --save-steps $S --logging-steps 1
check dpo
step ppo 120 $PY -m align.cli ppo --config ppo_quick --reward-model "$R/reward_model" \
    --prompts "$D/pairwise.train.jsonl" --output-dir "$R/ppo" --save-steps 2 --max-steps $P --batch-size 8 \
    --mini-batch-size 4
check ppo
# only when STEPS names it: align ppo again, every non-finite value traced (the first module, the phase, the gradient)
[[ " ${STEPS:-} " == *" ppo-probe "* ]] && step ppo-probe 150 $G probe -- --config ppo_quick \
    --reward-model "$R/reward_model" --prompts "$D/pairwise.train.jsonl" --output-dir "$R/ppo_probe" --save-steps 2 \
    --max-steps $P --batch-size 8 --mini-batch-size 4
step grpo 120 $PY -m align.cli grpo --config grpo_quick --prompts "$D/gp.jsonl" --output-dir "$R/grpo" \
    --save-steps 2 --max-steps $P
check grpo

# --- scale-out engines on one GPU: FSDP2 (and DeepSpeed where it imports)
step fsdp-sft-full 120 $PY -m accelerate.commands.launch --config_file configs/accelerate_fsdp.yaml \
    --num_processes 1 -m align.cli sft --config sft_quick --lora false --data "$D/sft.jsonl" \
    --output-dir "$R/sft_fsdp" --max-steps $S --save-steps $S --logging-steps 1
check sft_fsdp
if $PY -c "import deepspeed" 2>/dev/null; then
    step deepspeed-dpo 150 $PY -m accelerate.commands.launch --config_file configs/accelerate_deepspeed.yaml \
        --num_processes 1 -m align.cli dpo --config dpo_quick --data "$D/pairwise.train.jsonl" \
        --output-dir "$R/dpo_deepspeed" --max-steps $S --save-steps $S --logging-steps 1
    check dpo_deepspeed
else
    echo "deepspeed: not importable here ($($PY -c 'import deepspeed' 2>&1 | tail -1)); accelerate_deepspeed.yaml not run" \
        | tee -a "$SUMMARY"
fi

# --- the benches, tables to the log only (--no-write)
if [ "${TINY:-0}" = 1 ]; then
    BDPO="--pairs 2 --repeats 1 --rounds 1 --trl-default-steps 1"; BPPO="--repeats 1 --max-new-tokens 8"
    BRM="--steps 3 --repeats 1 --skip-ceiling"
else
    BDPO="--rounds 1"; BPPO="--repeats 2"; BRM="--repeats 1 --skip-ceiling"
fi
step bench_dpo 150 $PY bench/bench_dpo.py --no-write $BDPO
step bench_ppo 150 $PY bench/bench_ppo.py --no-write $BPPO
step bench_reward_model 150 $PY bench/bench_reward_model.py --no-write $BRM
[ -f bench/bench_grpo.py ] && step bench_grpo 150 $PY bench/bench_grpo.py --no-write

# --- the rest of the trainers, then FSDP under an on-policy trainer, while the budget lasts
step online-dpo 120 $PY -m align.cli online-dpo --config dpo_online_quick --reward-model "$R/reward_model" \
    --prompts "$D/pairwise.train.jsonl" --output-dir "$R/online_dpo" --save-steps 2 --max-steps $P
check online_dpo
step rloo 120 $PY -m align.cli rloo --config rloo_quick --prompts "$D/gp.jsonl" --output-dir "$R/rloo" \
    --save-steps 2 --max-steps $P
check rloo
step fsdp-ppo 120 $PY -m accelerate.commands.launch --config_file configs/accelerate_fsdp.yaml \
    --num_processes 1 -m align.cli ppo --config ppo_quick --reward-model "$R/reward_model" \
    --prompts "$D/pairwise.train.jsonl" --output-dir "$R/ppo_fsdp" --save-steps 2 --max-steps $P
check ppo_fsdp

# the on-policy trainers that run data parallel only must refuse a sharded launch in one line (on a GPU;
# CPU processes run plain data parallel whatever the config says)
refused() {  # refused ENGINE_CONFIG COMMAND...: PASS when the launch ends with prefloop's one-line refusal
    local config=$1; shift
    $PY -m accelerate.commands.launch --config_file "$config" --num_processes 1 "$@" > "$WORK/refused.log" 2>&1
    cat "$WORK/refused.log"; grep -q "does not run under" "$WORK/refused.log"
}
export -f refused; export PY WORK
step fsdp-online-dpo-refused 90 bash -c 'refused "$@"' refused configs/accelerate_fsdp.yaml -m align.cli online-dpo \
    --config dpo_online_quick --reward-model "$R/reward_model" --prompts "$D/pairwise.train.jsonl" \
    --output-dir "$R/online_dpo_fsdp" --max-steps $P
$PY -c "import deepspeed" 2>/dev/null && step deepspeed-ppo-refused 90 bash -c 'refused "$@"' refused configs/accelerate_deepspeed.yaml \
    -m align.cli ppo --config ppo_quick --reward-model "$R/reward_model" --prompts "$D/pairwise.train.jsonl" \
    --output-dir "$R/ppo_deepspeed" --max-steps $P

cp "$SUMMARY" "$OUT/summary.txt"
(cd "$WORK" && tar czf "$OUT/runs.tar.gz" summary.txt logs data \
    $(cd "$WORK" && find runs -maxdepth 2 \( -name run.json -o -name metrics.jsonl -o -name samples.jsonl \
      -o -name '*.png' \) 2>/dev/null))
echo; echo "=== summary (total $((SECONDS - START))s)"; cat "$SUMMARY"

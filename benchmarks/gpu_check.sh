#!/usr/bin/env bash
# The CUDA path on a GPU machine: the CUDA tests, then the dSTRF, training, stacked-fit and
# end-to-end (paper preset) benchmarks
# with --device cuda. Logs go to $1 (default: gpu-check/). Each step has its own time limit
# so one slow step cannot hide the others' results.
#
#   bash benchmarks/gpu_check.sh [LOGDIR]
set -u
log=${1:-gpu-check}
mkdir -p "$log"
export PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')" | tee "$log/env.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$log/env.txt"
timeout 240 python3 -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py 2>&1 | tee "$log/pytest_cuda.txt"
timeout 150 python3 benchmarks/dstrf_speed.py --device cuda 2>&1 | tee "$log/dstrf_speed_cuda.txt"
timeout 200 python3 benchmarks/training_speed.py --device cuda --preset small 2>&1 | tee "$log/training_speed_cuda.txt"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_batch_devices.py tests/test_stacked_fits.py 2>&1 | tee "$log/pytest_batch_stacked.txt"
timeout 120 python3 benchmarks/stacked_fits.py --device cuda 2>&1 | tee "$log/stacked_fits_cuda.txt"
timeout 600 python3 benchmarks/paper_recipe.py --workdir "$log/paper" --device cuda --stacked 2>&1 | tee "$log/paper_recipe_cuda.txt"

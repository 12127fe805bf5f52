# ort_install.sh - sourced by bench/compare.sh and bench/v2_infer.sh.
#
# ort_install NPM_DIR: makes onnxruntime-node ready in NPM_DIR, installing
# it from npm's registry on first use (like the OpenAPI validator). Its
# install script fetches GPU add-ons from a host that may not be
# reachable; the CPU build ships in the package, hence --ignore-scripts.
# Returns 0 when it is ready; otherwise prints why ONNX Runtime is skipped
# and returns 1.
ort_install() {
    local npm_dir=$1
    if ! command -v node >/dev/null; then
        echo "node is not installed (apt-get install nodejs npm)"
        return 1
    fi
    [ -d "$npm_dir/node_modules/onnxruntime-node" ] && return 0
    if ! command -v npm >/dev/null; then
        echo "npm is not installed (apt-get install npm)"
        return 1
    fi
    echo "installing onnxruntime-node into $npm_dir ..." >&2
    mkdir -p "$npm_dir"
    if ! npm install --prefix "$npm_dir" --no-audit --no-fund --ignore-scripts onnxruntime-node \
        >"$npm_dir-ort.log" 2>&1; then
        echo "npm could not install onnxruntime-node (log: $npm_dir-ort.log)"
        return 1
    fi
}

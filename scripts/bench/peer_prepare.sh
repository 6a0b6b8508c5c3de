#!/usr/bin/env bash
# Builds .peer/ (issue 8's peer comparison) on a machine with PyPI access, for
# scripts/bench/peer.sh to carry to the quiet machine, which has no network:
#   .peer/whl/sglang_rust_bench-0.5.23-cp312-...whl  SGLang 0.5.23's bundled Rust benchmark client
#   .peer/tokenizer/                                  an HF tokenizer folder over w0..w4095
#
# The peer is SGLang's Rust client `sglang-bench` (the PyO3 extension
# sglang/srt/rust_extensions/_bench.*.so that `python -m sglang.benchmark.rust_client` and
# `python -m sglang.benchmark.serving --rust-client` run). The sglang wheel is 39 MB and
# `import sglang` pulls torch 2.14, zmq, the server configs and ~70 other packages, while the
# extension itself is self-contained (tokio, reqwest, HF tokenizers, clap; glibc >= 2.34, no
# Python dependency). So the upstream wheel is downloaded, its sha256 checked, and only that
# extension, byte for byte, is repacked into a 3.6 MB wheel with a 10-line launcher:
# `python3 -m sglang_rust_bench ARGS` == `python -m sglang.benchmark.rust_client ARGS`.
#
# usage (repo root): scripts/bench/peer_prepare.sh [PYTHON_TAG]   # default cp312
set -euo pipefail
cd "$(dirname "$0")/../.."
tag=${1:-cp312}
version=0.5.23
declare -A sha=(
  [cp312]=8d257a319395b322bb1be327d05e5528859358153c8563b04c0a4a3c8af164b6
  [cp311]=00b3cd5b265ac76c64185fbb6b95424f324ddd9f428d0306b77bc9db9d859937
)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${tag#cp}" \
  --implementation cp --platform manylinux_2_34_x86_64 -d "$tmp" "sglang==$version"
whl=$(ls "$tmp"/sglang-"$version"-"$tag"-"$tag"-manylinux_2_34_x86_64.whl)
echo "${sha[$tag]}  $whl" | sha256sum -c -

mkdir -p .peer/whl .peer/tokenizer
rm -f .peer/whl/sglang_rust_bench-*-"$tag"-*.whl
python3 - "$whl" "$tag" "$version" "${sha[$tag]}" <<'EOF'
import base64, hashlib, sys, zipfile
src, tag, version, src_sha = sys.argv[1:]
so = f"sglang/srt/rust_extensions/_bench.cpython-{tag[2:]}-x86_64-linux-gnu.so"
pkg, dist = "sglang_rust_bench", f"sglang_rust_bench-{version}.dist-info"
with zipfile.ZipFile(src) as z:
    files = {
        f"{pkg}/_bench.cpython-{tag[2:]}-x86_64-linux-gnu.so": z.read(so),
        f"{pkg}/LICENSE": z.read(f"sglang-{version}.dist-info/licenses/LICENSE"),
        f"{pkg}/rust_client.py": z.read("sglang/benchmark/rust_client.py"),
    }
files[f"{pkg}/__init__.py"] = (
    f'"""SGLang {version}\'s Rust benchmark client, repacked from {src.rsplit("/", 1)[-1]}\n'
    f"(sha256 {src_sha}): {so} byte for byte.\n"
    'rust_client.py is the upstream wrapper, kept for reference (it imports sglang)."""\n'
).encode()
files[f"{pkg}/__main__.py"] = b'''"""`python -m sglang_rust_bench ARGS`: what `python -m sglang.benchmark.rust_client ARGS`
does (sglang/benchmark/rust_client.py main()), without importing the rest of SGLang."""
import sys

from sglang_rust_bench import _bench

try:
    _bench.run_argv(["python -m sglang.benchmark.rust_client"] + sys.argv[1:])
except SystemExit as exit_request:
    sys.exit(int(exit_request.code or 0))
'''
files[f"{dist}/METADATA"] = (
    f"Metadata-Version: 2.1\nName: sglang-rust-bench\nVersion: {version}\n"
    f"Summary: sglang-bench (SGLang {version}'s Rust benchmark client) extracted from the sglang wheel\n"
    "License: Apache-2.0\nRequires-Python: >=3.11\n"
).encode()
files[f"{dist}/WHEEL"] = (
    f"Wheel-Version: 1.0\nGenerator: trace peer_prepare.sh\nRoot-Is-Purelib: false\n"
    f"Tag: {tag}-{tag}-manylinux_2_34_x86_64\n"
).encode()
record = []
for name, data in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record.append(f"{name},sha256={digest},{len(data)}")
record.append(f"{dist}/RECORD,,")
files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
out = f".peer/whl/sglang_rust_bench-{version}-{tag}-{tag}-manylinux_2_34_x86_64.whl"
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as w:
    for name, data in files.items():
        w.writestr(zipfile.ZipInfo(name, (2026, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
print(out)
EOF

# The word-level tokenizer the simulator counts with; AutoTokenizer and sglang-bench both load it.
cp traces/tokenizer.json .peer/tokenizer/tokenizer.json
cat > .peer/tokenizer/tokenizer_config.json <<'EOF'
{
  "tokenizer_class": "PreTrainedTokenizerFast",
  "unk_token": "<unk>",
  "bos_token": "<s>",
  "eos_token": "</s>",
  "pad_token": "<pad>",
  "add_bos_token": false,
  "add_eos_token": false,
  "clean_up_tokenization_spaces": false,
  "model_max_length": 1000000
}
EOF
cat > .peer/tokenizer/special_tokens_map.json <<'EOF'
{"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
EOF
grep -qx '/.peer/' .git/info/exclude 2>/dev/null || echo '/.peer/' >> .git/info/exclude
du -sh .peer

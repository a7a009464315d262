#!/usr/bin/env bash
# Rewrite the flag reference of docs/serve.md: the fenced block between
#   <!-- serve --help: begin -->
#   <!-- serve --help: end -->
# becomes exactly what `partnergate serve --help` prints. tests/docs.rs checks
# the two agree; run this after adding or changing a `serve` flag.
#
# Works from any directory. Builds the debug binary (`cargo build --bin
# partnergate`; set PARTNERGATE_BIN to use another binary) and runs it with an
# empty environment, so a PARTNERGATE_* variable set in your shell does not
# show up as a value in the help, and the width is clap's fixed default.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
doc="$root/docs/serve.md"

bin="${PARTNERGATE_BIN:-}"
if [[ -z "$bin" ]]; then
    (cd "$root" && cargo build -q --bin partnergate)
    target="$(cd "$root" && cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
    bin="$target/debug/partnergate"
fi

help="$(mktemp)"
trap 'rm -f "$help"' EXIT
env -i "$bin" serve --help >"$help"

python3 - "$doc" "$help" <<'PY'
import sys

doc_path, help_path = sys.argv[1], sys.argv[2]
BEGIN = "<!-- serve --help: begin -->"
END = "<!-- serve --help: end -->"
text = open(doc_path, encoding="utf-8").read()
help_text = open(help_path, encoding="utf-8").read()
if not help_text.endswith("\n"):
    help_text += "\n"
if "```" in help_text:
    sys.exit("the help text holds a code fence; it cannot be embedded as is")
lines = text.split("\n")
try:
    b = lines.index(BEGIN)
    e = lines.index(END, b + 1)
except ValueError:
    sys.exit(f"{doc_path}: needs the marker lines `{BEGIN}` and `{END}`, in that order")
block = ["```text"] + help_text.rstrip("\n").split("\n") + ["```"]
out = "\n".join(lines[: b + 1] + block + lines[e:])
if out != text:
    open(doc_path, "w", encoding="utf-8").write(out)
    print(f"rewrote the flag reference in {doc_path}")
else:
    print(f"{doc_path}: the flag reference is current")
PY

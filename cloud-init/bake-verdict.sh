#!/bin/sh
# vmrun bake: run as power_state's condition, after cloud-init's final stage has exited.
# Prints the bake's verdict on the serial console, on the line vmrun waits for ("$1 ok" or
# "$1 failed: ..."), and always lets the guest power off.
marker="$1"
errors=$(python3 - <<'PY' 2>&1
import json
try:
    with open("/run/cloud-init/result.json") as f:
        errors = json.load(f)["v1"]["errors"]
except Exception as e:
    errors = ["no cloud-init result: %s" % e]
# One line: an error's line breaks, real or escaped as in a repr, become spaces.
print("; ".join(str(e).replace("\\n", " ").replace("\n", " ") for e in errors))
PY
)
if [ -z "$errors" ]; then
    # Machines made from the image boot without cloud-init: its work is done, and a new
    # instance would regenerate the host keys vmrun pinned. Each machine gets its own id.
    touch /etc/cloud/cloud-init.disabled
    : > /etc/machine-id
    sync
    echo "$marker ok" > /dev/ttyS0
else
    # printf, not echo: dash's echo turns a `\n` in the errors into a line break.
    printf '%s failed: %s\n' "$marker" "$errors" > /dev/ttyS0
fi
exit 0

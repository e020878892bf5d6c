#!/usr/bin/env python3
"""Print the README's message provenance rows from the .proto files (run from the crate dir)."""
import os, re
SECTIONS = {
 "synchronizer_connectivity.proto": "§2", "sequencer_connection.proto": "§2", "time_tracker_config.proto": "§2",
 "party_management_service.proto": "§3.1", "acs_import.proto": "§3.1", "active_contract.proto": "§12",
 "pruning_service.proto": "§4.1", "pruning.proto": "§4.1", "participant_pruning_service.proto": "§4.1",
 "participant_repair_service.proto": "§5",
 "enterprise_participant_replication_service.proto": "§6.1", "participant_replication_service.proto": "§0.3, §6.1",
 "status_service.proto": "§6.2", "participant_status_service.proto": "§6.2", "sequencer_status_service.proto": "§6.2",
 "mediator_status_service.proto": "§6.2", "health.proto": "§6.3",
 "sequencer_administration_service.proto": "§7.1", "sequencer_initialization_snapshot.proto": "§7.1",
 "mediator_administration_service.proto": "§7.2", "sequencer_connection_service.proto": "§7.2",
 "topology_manager_read_service.proto": "§8.2", "topology_manager_write_service.proto": "§8.3", "common.proto": "§8.1",
 "topology.proto": "§8.1–8.3", "crypto.proto": "§8.2", "synchronizer_parameters.proto": "§8 (restore: tolerance)",
 "traffic_control_parameters.proto": "§8", "sequencing_parameters.proto": "§8",
 "initialization_service.proto": "§8.4", "vault_service.proto": "§8.4", "topology_aggregation_service.proto": "§3.2",
 "state_service.proto": "§9", "participant_inspection_service.proto": "§4.1, §10", "api_info.proto": "§0.4",
 "ping_pong_service.proto": "—",
}
rows = []
for root in ["proto/3.4", "proto/supplement", "proto/3.5"]:
    for d, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            path = os.path.join(d, f)
            rel = os.path.relpath(path, root)
            pkg = None; stack = []
            for line in open(path):
                m = re.match(r"^package ([\w.]+);", line)
                if m: pkg = m.group(1)
                m = re.match(r"^(\s*)(message|enum) (\w+) \{", line)
                if m:
                    depth = len(m.group(1)) // 2
                    stack = stack[:depth] + [m.group(3)]
                    kind = "enum " if m.group(2) == "enum" else ""
                    name = ".".join(stack)
                    if root == "proto/3.4":
                        src = f"A.2 `{rel}`"
                    elif root == "proto/3.5":
                        src = "3.5 delta (not in the appendix)"
                    else:
                        src = "supplement (not in the appendix)"
                    rows.append(f"| {kind}`{pkg}.{name}` | `{root}/{rel}` | {src} | {SECTIONS[f]} |")
print("\n".join(rows))

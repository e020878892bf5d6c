#!/usr/bin/env python3
"""Write our .proto files for the release-line-3.4 subset from the wire appendix.

The appendix (../shared/canton-3.4-wire-appendix.md) lists every service path and every message's
fields as `name = number : type`. This tool selects the RPCs in SELECTED_RPCS (plus EXTRA_TYPES),
follows every referenced type, and writes one .proto per appendix file under proto/3.4/.
Hand-written files (outside the appendix, or 3.5 deltas) live elsewhere and are never touched.

Usage: python3 tools/protos_from_appendix.py [path/to/appendix.md]
"""
import os
import re
import sys
from collections import OrderedDict

HERE = os.path.dirname(os.path.abspath(__file__))
CRATE = os.path.dirname(HERE)
DEFAULT_APPENDIX = os.path.join(CRATE, "..", "..", "..", "shared", "canton-3.4-wire-appendix.md")
OUT = os.path.join(CRATE, "proto", "3.4")

# Every RPC the runbooks need, as `package.Service/Method`.
SELECTED_RPCS = """
com.daml.ledger.api.v2.StateService/GetLedgerEnd
com.daml.ledger.api.v2.admin.ParticipantPruningService/Prune
com.digitalasset.canton.connection.v30.ApiInfoService/GetApiInfo
com.digitalasset.canton.admin.health.v30.StatusService/HealthDump
com.digitalasset.canton.admin.health.v30.StatusService/SetLogLevel
com.digitalasset.canton.admin.health.v30.StatusService/GetLastErrors
com.digitalasset.canton.admin.health.v30.StatusService/GetLastErrorTrace
com.digitalasset.canton.admin.participant.v30.ParticipantStatusService/ParticipantStatus
com.digitalasset.canton.admin.sequencer.v30.SequencerStatusService/SequencerStatus
com.digitalasset.canton.admin.mediator.v30.MediatorStatusService/MediatorStatus
com.digitalasset.canton.admin.participant.v30.EnterpriseParticipantReplicationService/SetPassive
com.digitalasset.canton.admin.participant.v30.PingService/Ping
com.digitalasset.canton.admin.participant.v30.SynchronizerConnectivityService/ConnectSynchronizer
com.digitalasset.canton.admin.participant.v30.SynchronizerConnectivityService/RegisterSynchronizer
com.digitalasset.canton.admin.participant.v30.SynchronizerConnectivityService/ReconnectSynchronizers
com.digitalasset.canton.admin.participant.v30.SynchronizerConnectivityService/ReconnectSynchronizer
com.digitalasset.canton.admin.participant.v30.SynchronizerConnectivityService/ModifySynchronizer
com.digitalasset.canton.admin.participant.v30.SynchronizerConnectivityService/DisconnectSynchronizer
com.digitalasset.canton.admin.participant.v30.SynchronizerConnectivityService/DisconnectAllSynchronizers
com.digitalasset.canton.admin.participant.v30.SynchronizerConnectivityService/Logout
com.digitalasset.canton.admin.participant.v30.SynchronizerConnectivityService/ListConnectedSynchronizers
com.digitalasset.canton.admin.participant.v30.SynchronizerConnectivityService/ListRegisteredSynchronizers
com.digitalasset.canton.admin.participant.v30.SynchronizerConnectivityService/GetSynchronizerId
com.digitalasset.canton.admin.participant.v30.PartyManagementService/ExportPartyAcs
com.digitalasset.canton.admin.participant.v30.PartyManagementService/ImportPartyAcs
com.digitalasset.canton.admin.participant.v30.PartyManagementService/GetHighestOffsetByTimestamp
com.digitalasset.canton.admin.participant.v30.PartyManagementService/ClearPartyOnboardingFlag
com.digitalasset.canton.admin.participant.v30.ParticipantRepairService/ExportAcs
com.digitalasset.canton.admin.participant.v30.ParticipantRepairService/ImportAcs
com.digitalasset.canton.admin.participant.v30.ParticipantRepairService/PurgeContracts
com.digitalasset.canton.admin.participant.v30.ParticipantRepairService/MigrateSynchronizer
com.digitalasset.canton.admin.participant.v30.ParticipantRepairService/ChangeAssignation
com.digitalasset.canton.admin.participant.v30.ParticipantRepairService/PurgeDeactivatedSynchronizer
com.digitalasset.canton.admin.participant.v30.ParticipantRepairService/IgnoreEvents
com.digitalasset.canton.admin.participant.v30.ParticipantRepairService/UnignoreEvents
com.digitalasset.canton.admin.participant.v30.ParticipantInspectionService/LookupOffsetByTime
com.digitalasset.canton.admin.participant.v30.ParticipantInspectionService/LookupSentAcsCommitments
com.digitalasset.canton.admin.participant.v30.ParticipantInspectionService/LookupReceivedAcsCommitments
com.digitalasset.canton.admin.participant.v30.ParticipantInspectionService/GetIntervalsBehindForCounterParticipants
com.digitalasset.canton.admin.participant.v30.ParticipantInspectionService/CountInFlight
com.digitalasset.canton.admin.participant.v30.PruningService/Prune
com.digitalasset.canton.admin.participant.v30.PruningService/GetSafePruningOffset
com.digitalasset.canton.admin.participant.v30.PruningService/SetSchedule
com.digitalasset.canton.admin.participant.v30.PruningService/SetParticipantSchedule
com.digitalasset.canton.admin.participant.v30.PruningService/SetCron
com.digitalasset.canton.admin.participant.v30.PruningService/SetMaxDuration
com.digitalasset.canton.admin.participant.v30.PruningService/SetRetention
com.digitalasset.canton.admin.participant.v30.PruningService/ClearSchedule
com.digitalasset.canton.admin.participant.v30.PruningService/GetSchedule
com.digitalasset.canton.admin.participant.v30.PruningService/GetParticipantSchedule
com.digitalasset.canton.admin.participant.v30.PruningService/SetNoWaitCommitmentsFrom
com.digitalasset.canton.admin.participant.v30.PruningService/ResetNoWaitCommitmentsFrom
com.digitalasset.canton.admin.participant.v30.PruningService/GetNoWaitCommitmentsFrom
com.digitalasset.canton.mediator.admin.v30.MediatorAdministrationService/Prune
com.digitalasset.canton.mediator.admin.v30.MediatorAdministrationService/SetSchedule
com.digitalasset.canton.mediator.admin.v30.MediatorAdministrationService/SetCron
com.digitalasset.canton.mediator.admin.v30.MediatorAdministrationService/SetMaxDuration
com.digitalasset.canton.mediator.admin.v30.MediatorAdministrationService/SetRetention
com.digitalasset.canton.mediator.admin.v30.MediatorAdministrationService/ClearSchedule
com.digitalasset.canton.mediator.admin.v30.MediatorAdministrationService/GetSchedule
com.digitalasset.canton.mediator.admin.v30.MediatorAdministrationService/FindPruningTimestamp
com.digitalasset.canton.sequencer.admin.v30.SequencerAdministrationService/PruningStatus
com.digitalasset.canton.sequencer.admin.v30.SequencerAdministrationService/DisableMember
com.digitalasset.canton.topology.admin.v30.IdentityInitializationService/GetId
com.digitalasset.canton.topology.admin.v30.IdentityInitializationService/CurrentTime
com.digitalasset.canton.topology.admin.v30.TopologyAggregationService/ListParties
com.digitalasset.canton.topology.admin.v30.TopologyManagerReadService/ListOwnerToKeyMapping
com.digitalasset.canton.topology.admin.v30.TopologyManagerReadService/ListSynchronizerTrustCertificate
com.digitalasset.canton.topology.admin.v30.TopologyManagerReadService/ListParticipantSynchronizerPermission
com.digitalasset.canton.topology.admin.v30.TopologyManagerReadService/ListPartyToParticipant
com.digitalasset.canton.topology.admin.v30.TopologyManagerReadService/ListSynchronizerParametersState
com.digitalasset.canton.topology.admin.v30.TopologyManagerReadService/ListMediatorSynchronizerState
com.digitalasset.canton.topology.admin.v30.TopologyManagerReadService/ListSequencerSynchronizerState
com.digitalasset.canton.topology.admin.v30.TopologyManagerReadService/ListAvailableStores
com.digitalasset.canton.topology.admin.v30.TopologyManagerWriteService/Authorize
com.digitalasset.canton.topology.admin.v30.TopologyManagerWriteService/AddTransactions
com.digitalasset.canton.topology.admin.v30.TopologyManagerWriteService/SignTransactions
""".split()

# Types the hand-written files need that no selected RPC pulls in.
EXTRA_TYPES = """
com.digitalasset.canton.crypto.v30.PublicKeyWithName
com.digitalasset.canton.crypto.v30.KeyPurpose
com.digitalasset.canton.crypto.v30.SigningKeyUsage
com.digitalasset.canton.crypto.v30.SigningKeySpec
com.digitalasset.canton.crypto.v30.EncryptionKeySpec
com.digitalasset.canton.admin.participant.v30.ActiveContract
""".split()

SCALARS = {"double", "float", "int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32",
           "fixed64", "sfixed32", "sfixed64", "bool", "string", "bytes"}
WELL_KNOWN = {
    "google.protobuf.Timestamp": "google/protobuf/timestamp.proto",
    "google.protobuf.Duration": "google/protobuf/duration.proto",
    "google.protobuf.Empty": "google/protobuf/empty.proto",
    "google.protobuf.FieldMask": "google/protobuf/field_mask.proto",
    "google.protobuf.Any": "google/protobuf/any.proto",
}

FIELD_RE = re.compile(r"^(\w+) = (\d+) : (rep |opt )?(map<[^>]+>|[\w.]+)( \(oneof (\w+)\))?$")


def parse(appendix):
    services = OrderedDict()  # "pkg.Service" -> (file basename, [(method, req, resp, mode)])
    types = OrderedDict()  # full name -> dict(kind, file, fields|values)
    section = None
    current_service = None
    current_file = None
    for line in open(appendix, encoding="utf-8"):
        line = line.rstrip("\n")
        if line.startswith("## A.1"):
            section = "services"
            continue
        if line.startswith("## A.2"):
            section = "messages"
            continue
        if section == "services":
            m = re.match(r"^### `([\w.]+)` \(([\w.]+)\)$", line)
            if m:
                current_service = m.group(1)
                services[current_service] = (m.group(2), [])
                continue
            m = re.match(r"^- `/([\w.]+)/(\w+)`: ([\w.]+) → ([\w.]+)( \((server|client) stream\))?$", line)
            if m:
                assert m.group(1) == current_service, line
                services[current_service][1].append((m.group(2), m.group(3), m.group(4), m.group(6)))
        elif section == "messages":
            m = re.match(r"^### ([\w/]+\.proto)$", line)
            if m:
                current_file = m.group(1)
                continue
            m = re.match(r"^- enum `([\w.]+)`: (.*)$", line)
            if m:
                values = [tuple(v.split("=")) for v in m.group(2).split(", ")]
                types.setdefault(m.group(1), {"kind": "enum", "file": current_file, "values": values})
                continue
            m = re.match(r"^- `([\w.]+)`: (.*)$", line)
            if m:
                fields = []
                if m.group(2) != "(empty)":
                    for text in m.group(2).split("; "):
                        f = FIELD_RE.match(text)
                        assert f, (line, text)
                        fields.append({"name": f.group(1), "number": int(f.group(2)),
                                       "label": (f.group(3) or "").strip(), "type": f.group(4),
                                       "oneof": f.group(6)})
                types.setdefault(m.group(1), {"kind": "message", "file": current_file, "fields": fields})
    return services, types


def package_of_file(path):
    return os.path.dirname(path).replace("/", ".")


def referenced(field_type):
    m = re.match(r"^map<(\w+), ([\w.]+)>$", field_type)
    inner = m.group(2) if m else field_type
    return None if inner in SCALARS else inner


def main():
    appendix = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_APPENDIX
    services, types = parse(appendix)

    selected_rpcs = OrderedDict()
    wanted = list(EXTRA_TYPES)
    for entry in SELECTED_RPCS:
        service, method = entry.split("/")
        rpcs = dict((r[0], r) for r in services[service][1])
        rpc = rpcs[method]
        selected_rpcs.setdefault(service, []).append(rpc)
        wanted += [rpc[1], rpc[2]]

    chosen = set()
    while wanted:
        name = wanted.pop()
        if name in chosen or name in WELL_KNOWN:
            continue
        if name not in types:
            raise SystemExit(f"type {name} is not in the appendix")
        chosen.add(name)
        info = types[name]
        package = package_of_file(info["file"])
        parent = name[: name.rfind(".")]
        if parent != package:
            wanted.append(parent)
        if info["kind"] == "message":
            for f in info["fields"]:
                ref = referenced(f["type"])
                if ref:
                    wanted.append(ref)

    files = OrderedDict()
    for name in types:
        if name in chosen:
            files.setdefault(types[name]["file"], []).append(name)
    service_files = OrderedDict()
    for service, rpcs in selected_rpcs.items():
        package = service[: service.rfind(".")]
        path = package.replace(".", "/") + "/" + services[service][0]
        service_files.setdefault(path, []).append((service, rpcs))
        files.setdefault(path, [])

    file_of = {name: types[name]["file"] for name in chosen}
    written = []
    for path, names in files.items():
        package = package_of_file(path)
        imports = set()
        for name in names:
            info = types[name]
            if info["kind"] == "message":
                for f in info["fields"]:
                    ref = referenced(f["type"])
                    if ref:
                        imports.add(WELL_KNOWN.get(ref) or file_of[ref])
        for _, rpcs in service_files.get(path, []):
            for rpc in rpcs:
                for ref in (rpc[1], rpc[2]):
                    imports.add(WELL_KNOWN.get(ref) or file_of[ref])
        imports.discard(path)

        out = []
        out.append("// Written by tools/protos_from_appendix.py from the facts of canton-3.4-wire-appendix.md")
        out.append(f"// (A.1 and A.2 `{path}`); regenerate instead of editing by hand.")
        out.append('syntax = "proto3";')
        out.append("")
        out.append(f"package {package};")
        out.append("")
        for imp in sorted(imports):
            out.append(f'import "{imp}";')
        if imports:
            out.append("")
        for service, rpcs in service_files.get(path, []):
            out.append(f"service {service[len(package) + 1:]} {{")
            for method, req, resp, mode in rpcs:
                req_s = ("stream " if mode == "client" else "") + type_text(req, package)
                resp_s = ("stream " if mode == "server" else "") + type_text(resp, package)
                out.append(f"  rpc {method}({req_s}) returns ({resp_s});")
            out.append("}")
            out.append("")

        children = {}
        top = []
        for name in names:
            parent = name[: name.rfind(".")]
            if parent == package:
                top.append(name)
            else:
                children.setdefault(parent, []).append(name)

        def render(name, indent):
            pad = "  " * indent
            info = types[name]
            short = name[name.rfind(".") + 1:]
            if info["kind"] == "enum":
                out.append(f"{pad}enum {short} {{")
                for value, number in info["values"]:
                    out.append(f"{pad}  {value} = {number};")
                out.append(f"{pad}}}")
                return
            out.append(f"{pad}message {short} {{")
            for child in children.get(name, []):
                render(child, indent + 1)
            emitted_oneofs = set()
            for f in info["fields"]:
                if f["oneof"]:
                    if f["oneof"] in emitted_oneofs:
                        continue
                    emitted_oneofs.add(f["oneof"])
                    out.append(f"{pad}  oneof {f['oneof']} {{")
                    for g in info["fields"]:
                        if g["oneof"] == f["oneof"]:
                            out.append(f"{pad}    {type_text(g['type'], package)} {g['name']} = {g['number']};")
                    out.append(f"{pad}  }}")
                    continue
                label = {"rep": "repeated ", "opt": "optional ", "": ""}[f["label"]]
                out.append(f"{pad}  {label}{type_text(f['type'], package)} {f['name']} = {f['number']};")
            out.append(f"{pad}}}")

        for name in top:
            render(name, 0)
            out.append("")
        target = os.path.join(OUT, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8") as handle:
            handle.write("\n".join(out).rstrip("\n") + "\n")
        written.append(path)
    for path in written:
        print(path)


def type_text(field_type, package):
    """Names in the file's own package are written relative to it, others fully qualified."""
    def name(t):
        if t in SCALARS:
            return t
        if t.startswith(package + "."):
            return t[len(package) + 1:]
        return "." + t
    m = re.match(r"^map<(\w+), ([\w.]+)>$", field_type)
    if m:
        return f"map<{m.group(1)}, {name(m.group(2))}>"
    return name(field_type)


if __name__ == "__main__":
    main()

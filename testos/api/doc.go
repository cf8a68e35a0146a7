// Package api is the gRPC API of qcluster's default node OS (testos): the
// Parameters message a node receives through fw_cfg as protojson, and the
// services its agent serves (grpc.health.v1, NodeService, Management and, on
// the bootstrap node, Membership). The Go code is generated from
// testos.proto by scripts/genproto.sh (protoc from Debian plus pinned
// plugins); internal/protogen's TestGenerated checks that regenerating gives
// the committed bytes.
package api

//go:generate ../../scripts/genproto.sh testos.proto

// DefaultListenPort is the TCP port the agent serves gRPC on when
// Parameters.listen_port is 0.
const DefaultListenPort = 7443

// ParametersFwCfgName is the fw_cfg file name the launcher passes the
// parameters under: -fw_cfg name=opt/qcluster/parameters,file=PATH.
const ParametersFwCfgName = "opt/qcluster/parameters"

// ReadyPrefix starts the one line the agent prints on the console once it
// serves: "qcluster-agent: ready node=<name> addr=<ip>".
const ReadyPrefix = "qcluster-agent: ready "

// FatalPrefix starts the line the agent prints before powering off on a
// fatal error: "qcluster-agent: fatal: <reason>".
const FatalPrefix = "qcluster-agent: fatal: "

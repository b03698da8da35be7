package testenv

import (
	"errors"
	"fmt"
)

// RedisOption configures the servers that StartRedis, StartRedisCluster and
// StartRedisSentinel start.
type RedisOption func(*redisOptions)

// TLSAuthClients is Redis's tls-auth-clients setting: whether a TLS client
// must present a certificate the CA signed.
type TLSAuthClients string

const (
	RequireClientCert  TLSAuthClients = "yes"      // no certificate, no connection
	OptionalClientCert TLSAuthClients = "optional" // one is checked if given
	NoClientCert       TLSAuthClients = "no"       // none is asked for
)

type redisOptions struct {
	ca           *CA // nil: no TLS
	authClients  TLSAuthClients
	users        [][]string // ACL SETUSER arguments, one user each
	replicaProxy bool
	args         []string // more redis-server arguments (StartRedis only)
}

// WithTLS serves TLS only (tls-port, and port 0: no plain-text port), with
// ca's server certificate, trusting ca for client certificates, which
// auth demands or not. Replication, cluster bus and Sentinel links use TLS
// too. The server's URL then has the scheme rediss, and Do trusts ca and
// presents ca's client certificate.
func WithTLS(ca *CA, auth TLSAuthClients) RedisOption {
	return func(o *redisOptions) { o.ca, o.authClients = ca, auth }
}

// WithACLUser creates an ACL user on every data server, once it runs and
// again after each restart: `ACL SETUSER name reset on >password rules...`,
// rules being ACL rules such as "~cache:*", "&chan", "+unlink". It is how a
// test runs cdcd as a least-privilege user (see Redis.UserURL). The default
// user stays as it is: the harness itself goes on working through it.
func WithACLUser(name, password string, rules ...string) RedisOption {
	return func(o *redisOptions) {
		args := append([]string{"ACL", "SETUSER", name, "reset", "on", ">" + password}, rules...)
		o.users = append(o.users, args)
	}
}

// WithArgs passes more redis-server arguments to StartRedis, after (and
// overriding) the harness's own and kept across Restart, such as
// "--enable-debug-command", "yes".
func WithArgs(args ...string) RedisOption {
	return func(o *redisOptions) { o.args = append(o.args, args...) }
}

// WithReplicaProxy makes StartRedisSentinel start each replica with
// replicaof pointing at a Proxy in front of the primary, so that a test can
// cut a replica off the replication stream (see RedisSentinel.ReplicaProxy).
// Other start functions reject it.
func WithReplicaProxy() RedisOption {
	return func(o *redisOptions) { o.replicaProxy = true }
}

// collectRedisOptions applies opts and checks what every start function
// needs of them.
func collectRedisOptions(opts []RedisOption) (redisOptions, error) {
	var o redisOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.ca != nil {
		switch o.authClients {
		case RequireClientCert, OptionalClientCert, NoClientCert:
		default:
			return o, fmt.Errorf("tls-auth-clients %q: want yes, optional or no", o.authClients)
		}
	}
	return o, nil
}

// errReplicaProxyOnlySentinel rejects WithReplicaProxy where there is no
// replica it could apply to.
var errReplicaProxyOnlySentinel = errors.New("WithReplicaProxy applies to StartRedisSentinel only")

// tlsArgs returns the server arguments for TLS on port, none without TLS.
func (o *redisOptions) tlsArgs() []string {
	if o.ca == nil {
		return nil
	}
	return []string{
		"--tls-cert-file", o.ca.ServerCertFile,
		"--tls-key-file", o.ca.ServerKeyFile,
		"--tls-ca-cert-file", o.ca.CertFile,
		"--tls-auth-clients", string(o.authClients),
		// A replica, a sentinel and a cluster node are TLS clients of
		// their peers: they present the server certificate, which is good
		// for client authentication too.
		"--tls-replication", "yes",
	}
}

// Package cloudtest starts the real servers that Takt's tests talk to: a
// Mosquitto MQTT broker ([StartMosquitto]) and a versitygw S3 gateway
// ([StartS3]); and it gives a test podman with its own image storage
// ([StartPodman], for the container trainers). Use it only from tests.
//
// # Basics
//
// Each server is a child process owned by one test: it listens on a free
// 127.0.0.1 port, keeps its config, data and log in t.TempDir(), and is
// stopped with its whole process group by t.Cleanup (also when the test
// fails; the kernel kills it if the test binary dies). When the test failed,
// the end of the server's log is printed with t.Log. Stop and Start take a
// server away and bring it back on the same port with the same data, for
// fault tests:
//
//	b := cloudtest.StartMosquitto(t)
//	s3 := cloudtest.StartS3(t)
//	bucket := s3.NewBucket(t, "takt")
//	// connect to b.URL and s3.Endpoint (AccessKey, SecretKey, Region) ...
//	b.Stop()  // clients lose the broker
//	b.Start() // same port, retained messages and sessions kept
//
// Startup takes well under a second on a normal machine; waits are bounded
// and end in t.Fatalf with the log's tail.
//
// # Binaries
//
//   - mosquitto: $TAKT_MOSQUITTO, else mosquitto on PATH, else
//     /usr/sbin/mosquitto (Debian package mosquitto; 2.0 tested).
//   - versitygw: $TAKT_VERSITYGW, else versitygw on PATH, else
//     .deps/bin/versitygw under the repository root (v1.8.0, installed with
//     go install by packaging/install-deps.sh).
//   - podman: $TAKT_PODMAN, else podman on PATH (Debian packages podman and
//     runc; 4.3 tested, rootful as root).
//
// A missing binary fails the test; it never skips. Run
// packaging/install-deps.sh, or make test which runs it first:
//
//	packaging/install-deps.sh && go test -race ./cloudsync/...
//
// # Caveats
//
//   - Stop, Start and NewBucket report failures with t.Fatalf: call them from
//     the test's goroutine, not from goroutines the test started.
//   - Ports are found by binding 127.0.0.1:0 and closing; another process can
//     take the port before the server binds it. The first start then retries
//     on a new port; Start after Stop must reuse its port and waits up to 10 s
//     for it to be free.
//   - Stop sends SIGTERM (clean shutdown: Mosquitto writes its persistence
//     file), not SIGKILL; for a crash of the component under test, kill that
//     component, not the server.
//   - versitygw honours If-None-Match: * on PutObject (412 PreconditionFailed
//     when the key exists; see TestS3ConditionalPut), like AWS S3 and MinIO.
//   - No TLS and no authentication on the broker; the S3 gateway has one root
//     account. [WithConfigLines] adds broker settings.
package cloudtest

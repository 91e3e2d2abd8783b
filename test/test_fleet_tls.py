"""Token and TLS settings reach Milvus: the Milvus Lite engine served on a TLS gRPC port
(certificates made with openssl for this test; the server records the authorization header),
from the node parameters and the `spartan-fleet` options through to the connection."""

import argparse
import base64
import subprocess
from concurrent import futures

import grpc
import numpy as np
import pytest
from fleet_helpers import free_port, random_segments
from milvus_lite.adapter.grpc.servicer import MilvusServicer
from milvus_lite.db import MilvusLite
from pymilvus.grpc_gen import milvus_pb2_grpc

from spartan_ros.fleet import cli
from spartan_ros.fleet.link import connection
from spartan_ros.memory.milvus_store import (
    GRPC_OPTIONS,
    Connection,
    FleetUnavailable,
    MilvusSegmentStore,
)
from spartan_ros.node.parameters import PARAMETERS

TOKEN = "car7:secret"


def openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA; a server certificate for the name fleet.test only (not 127.0.0.1); a client one."""
    d = tmp_path_factory.mktemp("certs")
    openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=spartan test CA")
    for name, ext in (("server", "subjectAltName=DNS:fleet.test"),
                      ("client", "extendedKeyUsage=clientAuth")):
        openssl(d, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                f"{name}.csr", "-subj", f"/CN={name}")
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile",
                f"{name}.ext")
    return d


class AuthorizationRecorder(grpc.ServerInterceptor):
    def __init__(self):
        self.seen = set()

    def intercept_service(self, continuation, details):
        self.seen.update(v for k, v in details.invocation_metadata if k == "authorization")
        return continuation(details)


def serve(data_dir, certs=None, client_auth=False):
    """Milvus Lite's engine and gRPC servicer on 127.0.0.1, over TLS when certs are given."""
    db = MilvusLite(str(data_dir))
    recorder = AuthorizationRecorder()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[recorder])
    milvus_pb2_grpc.add_MilvusServiceServicer_to_server(MilvusServicer(db), server)
    if certs is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        pair = ((certs / "server.key").read_bytes(), (certs / "server.pem").read_bytes())
        creds = grpc.ssl_server_credentials(
            [pair], root_certificates=(certs / "ca.pem").read_bytes() if client_auth else None,
            require_client_auth=client_auth)
        port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    return server, db, port, recorder


@pytest.fixture
def tls_server(tmp_path, certs):
    server, db, port, recorder = serve(tmp_path / "tls-data", certs)
    yield port, recorder
    server.stop(0)
    db.close()


@pytest.fixture
def mutual_tls_server(tmp_path, certs):
    server, db, port, recorder = serve(tmp_path / "mtls-data", certs, client_auth=True)
    yield port
    server.stop(0)
    db.close()


def store_and_search(conn):
    head, segments = random_segments(30, 16, seed=3)
    with MilvusSegmentStore(conn, "m-tls", 16, head=head, vehicle_id="car7") as store:
        store.add_many(segments)
        found = store.search(3, np.ones(16, np.float32)).found
        assert len(found) == 3 and {f.segment.vehicle_id for f in found} == {"car7"}
        return store.count()


@pytest.mark.parametrize("scheme", ["https", "http"])  # a CA turns TLS on whatever the scheme
def test_token_ca_and_server_name_reach_milvus(tls_server, certs, scheme):
    port, recorder = tls_server
    conn = Connection(f"{scheme}://127.0.0.1:{port}", token=TOKEN,
                      tls_ca=str(certs / "ca.pem"), tls_server_name="fleet.test")
    assert store_and_search(conn) == 30
    assert base64.b64encode(TOKEN.encode()).decode() in recorder.seen
    assert "secret" not in conn.describe() and "token set" in conn.describe()


def test_mutual_tls_needs_the_client_certificate(mutual_tls_server, certs):
    uri = f"https://127.0.0.1:{mutual_tls_server}"
    # Refused first: pymilvus shares one open connection per address and token in a process.
    without = Connection(uri, tls_ca=str(certs / "ca.pem"), tls_server_name="fleet.test",
                         timeout_s=2.0)
    with pytest.raises(FleetUnavailable, match=rf"cannot connect to Milvus {uri} \(TLS, CA "):
        MilvusSegmentStore(without, "m-tls", 16, vehicle_id="car7")
    full = Connection(uri, tls_ca=str(certs / "ca.pem"), tls_cert=str(certs / "client.pem"),
                      tls_key=str(certs / "client.key"), tls_server_name="fleet.test")
    assert store_and_search(full) == 30


@pytest.mark.parametrize("settings, says", [
    ({}, "TLS, system CAs"),  # https: pymilvus trusts the system's CAs, not this test CA
    ({"tls_ca": "ca.pem"}, "TLS, CA "),  # the certificate names fleet.test, not 127.0.0.1
])
def test_tls_failures_name_the_uri_and_the_tls_settings(tls_server, certs, settings, says):
    uri = f"https://127.0.0.1:{tls_server[0]}"
    conn = Connection(uri, timeout_s=2.0, **{k: str(certs / v) for k, v in settings.items()})
    with pytest.raises(FleetUnavailable, match=rf"cannot connect to Milvus {uri} \({says}"):
        MilvusSegmentStore(conn, "m-tls", 16, vehicle_id="car7")


def test_tls_to_a_plain_server_or_no_server_is_a_clear_error(tmp_path, certs):
    server, db, port, _ = serve(tmp_path / "plain-data")
    try:
        conn = Connection(f"https://127.0.0.1:{port}", tls_ca=str(certs / "ca.pem"),
                          timeout_s=2.0)
        with pytest.raises(FleetUnavailable, match=rf"127.0.0.1:{port} \(TLS, CA "):
            MilvusSegmentStore(conn, "m-tls", 16, vehicle_id="car7")
        assert store_and_search(Connection(f"http://127.0.0.1:{port}")) == 30  # it is up
    finally:
        server.stop(0)
        db.close()
    nobody = f"https://127.0.0.1:{free_port()}"
    with pytest.raises(FleetUnavailable, match=rf"cannot connect to Milvus {nobody} \(TLS"):
        MilvusSegmentStore(Connection(nobody, timeout_s=2.0), "m-tls", 16, vehicle_id="car7")


@pytest.mark.parametrize("settings, problem", [
    ({"tls_cert": "client.pem"}, r"needs both milvus_tls_cert \(--tls-cert\) and milvus_tls_key"),
    ({"tls_key": "client.key"}, r"needs both milvus_tls_cert \(--tls-cert\) and milvus_tls_key"),
    ({"tls_cert": "client.pem", "tls_key": "client.key"},
     r"needs milvus_tls_ca \(--tls-ca\) too"),
    ({"tls_ca": "missing.pem"}, r"milvus_tls_ca \(--tls-ca\): \S+missing.pem does not exist"),
])
def test_tls_settings_that_cannot_work_are_refused_before_connecting(certs, settings, problem):
    conn = Connection("https://127.0.0.1:9", **{k: str(certs / v) for k, v in settings.items()})
    with pytest.raises(FleetUnavailable, match=problem):
        MilvusSegmentStore(conn, "m", 8, vehicle_id="v")
    plain = Connection("http://127.0.0.1:9", tls_server_name="fleet.test")
    with pytest.raises(FleetUnavailable, match=r"milvus_tls_server_name \(--tls-server-name\) is "
                                               r"set but TLS is off"):
        MilvusSegmentStore(plain, "m", 8, vehicle_id="v")


def test_node_parameters_and_cli_options_give_the_same_connection():
    names = {p.name for p in PARAMETERS}
    settings = {"milvus_token": TOKEN, "milvus_tls_ca": "/etc/ca.pem",
                "milvus_tls_cert": "/etc/c.pem", "milvus_tls_key": "/etc/c.key",
                "milvus_tls_server_name": "fleet.example.com"}
    assert set(settings) <= names
    uri = "https://fleet.example.com:19530"
    from_node = connection({"fleet_uri": uri, **settings}, "fleet_uri")
    args = argparse.Namespace(
        uri=uri, token=TOKEN, tls_ca="/etc/ca.pem", tls_cert="/etc/c.pem", tls_key="/etc/c.key",
        tls_server_name="fleet.example.com")
    assert cli._connection(args) == from_node
    assert from_node.client_kwargs() == {
        "uri": uri, "timeout": 10.0, "token": TOKEN, "secure": True,
        "client_pem_path": "/etc/c.pem", "client_key_path": "/etc/c.key",
        "ca_pem_path": "/etc/ca.pem", "server_name": "fleet.example.com",
        "grpc_options": GRPC_OPTIONS}


def test_a_milvus_lite_file_ignores_the_token_and_tls_settings(tmp_path, certs):
    """The node's TLS settings serve its fleet_uri; its own Milvus Lite memory must still open."""
    conn = Connection(str(tmp_path / "own.db"), token=TOKEN, tls_ca=str(certs / "ca.pem"),
                      tls_server_name="fleet.test")
    assert conn.client_kwargs() == {"uri": str(tmp_path / "own.db"), "timeout": 10.0}
    assert store_and_search(conn) == 30


def test_spartan_fleet_refuses_settings_that_cannot_work(capsys, certs):
    for command in (["status"], ["query", "a tree", "--model", "unused"],
                    ["push", "unused.db", "--vehicle", "car7"]):
        rc = cli.main([*command, "--uri", "https://127.0.0.1:9", "--tls-cert",
                       str(certs / "client.pem")])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert "needs both milvus_tls_cert (--tls-cert) and milvus_tls_key (--tls-key)" in err

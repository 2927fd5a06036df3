//! Bodies stream both ways intact, whatever their size.

use http::Request;
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};

use crate::support::upstream::full;
use crate::support::*;

const TEN_MIB: usize = 10 * 1024 * 1024;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn ten_mib_bodies_pass_both_ways_intact() {
    // The upstream hashes what it received and answers with 10 MiB of its own.
    let upstream = MockUpstream::start(|request| async move {
        let received = request.into_body().collect().await.unwrap().to_bytes();
        http::Response::builder()
            .header("x-received-len", received.len())
            .header("x-received-sha256", hex(&Sha256::digest(&received)))
            .body(full(pattern(TEN_MIB, 7)))
            .unwrap()
    })
    .await;
    let weir = TestWeir::start(&policy(&format!(
        "  big:\n    route: /big\n    url: {}\n",
        upstream.url()
    )))
    .await;

    for client in [client(), h2c_client()] {
        let sent = pattern(TEN_MIB, 3);
        let request = Request::post(weir.url("/big/upload"))
            .body(Full::from(sent.clone()))
            .unwrap();
        let response = tokio::time::timeout(PATIENCE, client.request(request))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["x-received-len"],
            TEN_MIB.to_string().as_str()
        );
        assert_eq!(
            response.headers()["x-received-sha256"],
            hex(&Sha256::digest(&sent)).as_str()
        );
        let body = body_bytes(response).await;
        assert_eq!(body.len(), TEN_MIB);
        assert!(
            body[..] == pattern(TEN_MIB, 7)[..],
            "response body corrupted"
        );
    }
    weir.shutdown().await;
}

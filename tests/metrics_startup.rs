//! The job queue's gauges exist from start-up. Alone in its own test binary: the metrics
//! recorder is global to a process, and in a binary with other tests their runners would have set
//! the gauges already (or to other values) by the time this one reads them.

mod common;

#[tokio::test]
async fn the_queue_depth_gauge_is_exported_from_start_up() {
    // The runner's maintenance samples the queue only after its first interval (a second with
    // these settings): the gauge must be there before that.
    let t = common::TestApp::spawn(&common::Backend::Sqlite).await;
    let text = t
        .client
        .get(t.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for status in ["pending", "running"] {
        let line = format!("jobs_queue_depth{{status=\"{status}\"}} 0");
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
    }
    t.stop().await;
}

//! Three replicas of the connector behind a real load balancer (HAProxy from
//! Debian's packages, health-checking `/readyz` every 250 ms, no retries), under a
//! steady signed load. A rolling restart by SIGTERM fails no request: each replica
//! fails its readiness first and serves on for its drain delay, so HAProxy takes it
//! out before it stops accepting. A `kill -9` fails only the requests on the killed
//! replica until HAProxy's next health check. Every acknowledged event is in Kafka.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SECRET: &str = "replicas-test-secret";
/// Well past HAProxy's time to take a replica out (its next check, within 250 ms).
const DRAIN_DELAY_MS: &str = "2000";
const REPLICAS: usize = 3;

/// HAProxy in front of the replicas' ports, run in the foreground; killed when dropped.
struct LoadBalancer {
    _child: KillOnDrop,
    url: String,
    stats: String,
    _dir: tempfile::TempDir,
}

impl LoadBalancer {
    fn start(ports: &[u16]) -> LoadBalancer {
        let installed = Command::new("haproxy").arg("-v").output();
        assert!(
            installed.is_ok_and(|o| o.status.success()),
            "haproxy is not installed: scripts/test.sh installs it (Debian's haproxy package)"
        );
        let (front, stats) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(&config, haproxy_config(front, stats, ports)).unwrap();
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .spawn()
            .expect("haproxy starts");
        LoadBalancer {
            _child: KillOnDrop(child),
            url: format!("http://127.0.0.1:{front}"),
            stats: format!("http://127.0.0.1:{stats}/stats;csv"),
            _dir: dir,
        }
    }

    /// HAProxy's status of replica `index` (`UP`, `DOWN`, ...), if it answers.
    async fn status(&self, index: usize) -> Option<String> {
        self.stat(index, "status").await
    }

    /// The errors HAProxy counted on replica `index`: connections refused or
    /// failed (`econ`) and answers broken off (`eresp`).
    async fn errors(&self, index: usize) -> u64 {
        let mut errors = 0;
        for column in ["econ", "eresp"] {
            let value = self.stat(index, column).await.expect("the stats answer");
            errors += value.parse::<u64>().unwrap_or(0);
        }
        errors
    }

    /// The `column` of replica `index` in HAProxy's CSV statistics.
    async fn stat(&self, index: usize, column: &str) -> Option<String> {
        let response = http_client().get(&self.stats).send().await.ok()?;
        let csv = response.text().await.ok()?;
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
        let column = header.iter().position(|c| *c == column)?;
        let name = format!("r{index}");
        lines
            .map(|line| line.split(',').collect::<Vec<_>>())
            .find(|fields| fields.first() == Some(&"replicas") && fields.get(1) == Some(&&*name))
            .and_then(|fields| fields.get(column).map(|s| s.to_string()))
    }

    /// Polls every 10 ms until HAProxy reports replica `index` `status`, or panics
    /// after 10 s; when it was first seen.
    async fn wait_for(&self, index: usize, status: &str) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.status(index).await;
            if now.as_deref() == Some(status) {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "r{index} is {now:?}, not {status}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Round robin over the replicas, `/readyz` checked every 250 ms (out after one
/// failure, back after one success; a check may take 2 s, as a probe of Kafka may),
/// and no retries, as Kubernetes Services and most ingresses do for POSTs.
fn haproxy_config(front: u16, stats: u16, ports: &[u16]) -> String {
    let servers: String = (ports.iter().enumerate())
        .map(|(i, port)| format!("    server r{i} 127.0.0.1:{port} check\n"))
        .collect();
    format!(
        "global\n    maxconn 512\n\n\
         defaults\n    mode http\n    retries 0\n    timeout connect 1s\n    \
         timeout client 30s\n    timeout server 30s\n    timeout check 2s\n\n\
         frontend webhooks\n    bind 127.0.0.1:{front}\n    default_backend replicas\n\n\
         backend replicas\n    balance roundrobin\n    option httpchk\n    \
         http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host replicas\n    \
         http-check expect status 200\n    default-server inter 250ms fall 1 rise 1\n\
         {servers}\n\
         listen stats\n    bind 127.0.0.1:{stats}\n    stats enable\n    stats uri /stats\n"
    )
}

/// The replicas: the connector binary on fixed ports, signed requests only.
struct Replicas {
    ports: Vec<u16>,
    running: Vec<ConnectorProcess>,
    bootstrap: String,
    routes: String,
}

impl Replicas {
    async fn start(bootstrap: &str, topic: &str) -> Replicas {
        let mut replicas = Replicas {
            ports: (0..REPLICAS).map(|_| free_port()).collect(),
            running: Vec::new(),
            bootstrap: bootstrap.to_string(),
            routes: routes_toml(topic, &[]),
        };
        for index in 0..REPLICAS {
            let process = replicas.spawn(index).await;
            replicas.running.push(process);
        }
        replicas
    }

    async fn spawn(&self, index: usize) -> ConnectorProcess {
        let at = Listen {
            port: self.ports[index],
            log: Stdio::inherit(),
        };
        let env = [
            ("CONNECTOR__WEBHOOK__SECRETS", SECRET),
            ("CONNECTOR__SERVER__DRAIN_DELAY_MS", DRAIN_DELAY_MS),
        ];
        spawn_connector_at(at, &self.bootstrap, &self.routes, &env).await
    }

    /// SIGTERM to replica `index`, and once it has exited 0 (within its drain
    /// delay, grace period and 3 s), starts it again.
    async fn restart(&mut self, index: usize) {
        let old = &mut self.running[index];
        old.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(2 + 10 + 3);
        let exit = loop {
            if let Some(exit) = old.child.0.try_wait().unwrap() {
                break exit;
            }
            assert!(Instant::now() < deadline, "r{index} still running");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(exit.code(), Some(0), "r{index}");
        self.running[index] = self.spawn(index).await;
    }

    /// Waits until replica `index` has accepted `count` notifications since it started.
    async fn wait_for_accepted(&self, index: usize, count: f64) {
        let url = &self.running[index].url;
        wait_for_metric_to(url, ACCEPTED, |n| n >= Some(count)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restarts_fail_no_request_and_a_kill_fails_only_until_the_next_health_check() {
    let broker = Broker::start();
    let topic = unique_topic("replicas");
    create_topics_on(&broker.bootstrap(), &[&topic]).await;
    let mut replicas = Replicas::start(&broker.bootstrap(), &topic).await;
    let balancer = LoadBalancer::start(&replicas.ports);
    for index in 0..REPLICAS {
        balancer.wait_for(index, "UP").await;
    }
    let _turn = alone().await;
    let load = Load::start(Senders {
        endpoint: format!("{}/webhooks/customer", balancer.url),
        clients: 4,
        secret: Some(SECRET.into()),
    });
    for index in 0..REPLICAS {
        replicas.wait_for_accepted(index, 20.0).await;
    }

    // A rolling restart, each replica back and taking requests before the next.
    for index in 0..REPLICAS {
        replicas.restart(index).await;
        balancer.wait_for(index, "UP").await;
        replicas.wait_for_accepted(index, 20.0).await;
    }

    // kill -9: the requests on that replica fail, and those HAProxy sends it
    // before its health checks take it out.
    let killed_at = Instant::now();
    replicas.running[0].child.kill();
    let out_at = balancer.wait_for(0, "DOWN").await;
    for index in 1..REPLICAS {
        replicas.wait_for_accepted(index, 100.0).await;
    }
    let outcomes = load.stop().await;
    let all: Vec<&Outcome> = outcomes.iter().collect();

    let restarts = started(&all, |at| at < killed_at);
    let restarts: Vec<&Outcome> = restarts
        .into_iter()
        .filter(|o| o.ended() < killed_at)
        .collect();
    assert_all(&restarts, "during the rolling restart: 200", |o| {
        o.status == Some(200)
    });
    // HAProxy took the killed replica out at its next check.
    let taken_out = out_at - killed_at;
    assert!(
        taken_out < Duration::from_millis(250 + 750),
        "{taken_out:?}"
    );
    let failed: Vec<&&Outcome> = all.iter().filter(|o| o.status != Some(200)).collect();
    assert_all(
        &all,
        "failed only when on the killed replica before it was out",
        |o| o.status == Some(200) || (o.ended() >= killed_at && o.started <= out_at),
    );
    // And only there: HAProxy counted no error on the other replicas.
    for index in 1..REPLICAS {
        assert_eq!(balancer.errors(index).await, 0, "r{index}");
    }
    eprintln!(
        "{} requests, {} during the rolling restart, all 200; {} failed at the kill -9 \
         (taken out {:?} after it)",
        all.len(),
        restarts.len(),
        failed.len(),
        out_at - killed_at
    );
    assert_acknowledged_are_in_kafka(&broker.bootstrap(), &topic, &all);
}

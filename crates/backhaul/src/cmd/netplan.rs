//! `backhaul netplan …`: the change guard from `backhaul-netplan`. `check` verdicts are exit
//! codes (0 pass, 1 warnings, 2 block); `apply` exits 0 kept, 1 nothing changed (error), 2
//! blocked or rolled back (proven), 3 rollback not proven, 75 another apply pending. Input it
//! cannot judge is a configuration error (78).
//!
//! This module supplies what the library leaves out on purpose: the real connectivity test,
//! DF probes with `backhaul-netprobe` at the full MTU of the link toward each target.

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::Duration;

use backhaul_netplan::cli::Runtime;
use backhaul_netplan::{
    Connectivity, Measurement, ProbeKind, ProbeResult, ProbeTarget, VerifyPolicy,
};
use backhaul_netprobe::{ProbeOutcome, Prober, Route};

use crate::env::ProcessEnv;
use crate::exit::ConfigInvalid;
use crate::probe::SMALL_PROBE_BYTES;

/// `apply` exits with this when another guarded apply holds the lock (sysexits `EX_TEMPFAIL`).
const PENDING: u8 = 75;
/// Large probes per target and round; one answer is enough (a single lost packet is not a
/// black hole, the verify's rounds-in-a-row rule handles persistence).
const LARGE_TRIES: u32 = 2;
/// Probe size when the link toward a target cannot be found.
const FALLBACK_MTU_BYTES: u32 = 1500;

/// Entry point.
pub fn main(
    command: backhaul_netplan::cli::NetplanCommand,
    process: &ProcessEnv,
) -> anyhow::Result<ExitCode> {
    let rt = Runtime {
        self_command: vec![process.exe.clone().into_os_string(), "netplan".into()],
        connectivity: netprobe_connectivity,
    };
    match backhaul_netplan::cli::run(command, &rt) {
        Ok(code) => Ok(code),
        Err(e) if e.is_input_error() => Err(anyhow::Error::new(ConfigInvalid(format!("{e:#}")))),
        Err(e) if e.is_pending() => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(PENDING))
        }
        Err(e) => Err(e.into()),
    }
}

fn netprobe_connectivity(targets: &[ProbeTarget], verify: &VerifyPolicy) -> Box<dyn Connectivity> {
    Box::new(NetprobeConnectivity {
        targets: targets.to_vec(),
        timeout: Duration::from_millis(verify.probe_timeout_ms),
    })
}

/// Small and full-size DF probes toward each target.
struct NetprobeConnectivity {
    targets: Vec<ProbeTarget>,
    timeout: Duration,
}

/// The link the kernel routes `addr` through (a tunnel device for an address behind one), and
/// its MTU now.
fn egress(addr: Ipv4Addr) -> Option<(String, u32)> {
    let route = Route::to(addr).ok()??;
    Some((route.device, route.device_mtu))
}

impl NetprobeConnectivity {
    fn probe(
        &self,
        t: &ProbeTarget,
        prober: &mut Prober,
        kind: ProbeKind,
        size: u32,
    ) -> ProbeResult {
        let tries = match kind {
            ProbeKind::Small => 1,
            ProbeKind::Large => LARGE_TRIES,
        };
        let mut result = ProbeResult {
            target: t.name.clone(),
            addr: t.addr,
            kind,
            size_bytes: size,
            ok: false,
            rtt_ms: None,
            note: None,
        };
        for _ in 0..tries {
            match prober.probe(size as usize) {
                Ok(ProbeOutcome::Passed { rtt_us }) => {
                    result.ok = true;
                    result.rtt_ms = Some(rtt_us as f64 / 1000.0);
                    result.note = None;
                    break;
                }
                Ok(ProbeOutcome::FragNeeded(f)) => {
                    result.note = Some(format!(
                        "frag-needed from {} next-hop mtu {}",
                        f.from, f.next_hop_mtu
                    ));
                }
                Ok(ProbeOutcome::LocalTooBig) => {
                    result.note = Some("the local link refused the size".into());
                }
                Ok(ProbeOutcome::Lost) => result.note = Some("lost".into()),
                Err(e) => result.note = Some(e.to_string()),
            }
        }
        result
    }
}

impl Connectivity for NetprobeConnectivity {
    fn measure(&mut self) -> Measurement {
        let mut probes = Vec::new();
        for t in &self.targets {
            // Probe at the MTU the link has now: after a change to 9000 the large probe is 9000
            // bytes, which is exactly what the black hole drops.
            let size = egress(t.addr).map_or(FALLBACK_MTU_BYTES, |(_, m)| m);
            match Prober::new(t.addr, self.timeout) {
                Ok(mut p) => {
                    probes.push(self.probe(t, &mut p, ProbeKind::Small, SMALL_PROBE_BYTES as u32));
                    probes.push(self.probe(t, &mut p, ProbeKind::Large, size));
                }
                Err(e) => {
                    for (kind, s) in [
                        (ProbeKind::Small, SMALL_PROBE_BYTES as u32),
                        (ProbeKind::Large, size),
                    ] {
                        probes.push(ProbeResult {
                            target: t.name.clone(),
                            addr: t.addr,
                            kind,
                            size_bytes: s,
                            ok: false,
                            rtt_ms: None,
                            note: Some(e.to_string()),
                        });
                    }
                }
            }
        }
        Measurement { at_ms: 0, probes }
    }

    fn describe(&self) -> Vec<String> {
        self.targets
            .iter()
            .map(|t| {
                let link = egress(t.addr).map_or_else(
                    || format!("{FALLBACK_MTU_BYTES} B (no route found)"),
                    |(dev, mtu)| format!("{mtu} B (MTU of {dev} at the time of each round)"),
                );
                format!(
                    "probe {} {}: small {SMALL_PROBE_BYTES} B, large DF {link}, up to {LARGE_TRIES} tries, {} ms timeout",
                    t.name,
                    t.addr,
                    self.timeout.as_millis()
                )
            })
            .collect()
    }
}

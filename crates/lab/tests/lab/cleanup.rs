//! Nothing is left behind: not after a normal teardown, a drop (panic path), nor a `kill -9`
//! of the lab's owner followed by the next `up`.

use std::process::{Command, Stdio};
use std::time::Duration;

use backhaul_lab::state::State;
use backhaul_lab::{IcmpPolicy, Node};

use super::support::{assert_eventually, exe, lab, leftovers};

pub fn killed_lab_is_removed_by_the_next_up() {
    let name = format!("k{}", std::process::id());
    let prefix = format!("bhl-{name}");
    let up = Command::new(exe())
        .args(["up", "--name", &name])
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let state = State::load(&prefix).unwrap();
    let wire = state
        .processes
        .iter()
        .find(|p| p.name == "wire")
        .unwrap()
        .clone();
    // A process living in the lab, like an agent or S3 server would.
    let mut sleeper = Command::new("ip")
        .args(["netns", "exec", &format!("{prefix}-site"), "sleep", "600"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let sleeper_pid = sleeper.id();
    assert_eventually("sleeper in the site", Duration::from_secs(5), || {
        backhaul_lab::start_time(sleeper_pid).is_some()
    });

    // kill -9 the owner: no teardown code runs.
    assert!(
        Command::new("kill")
            .args(["-9", &wire.pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert_eventually("wire gone", Duration::from_secs(5), || !wire.alive());
    assert!(
        !leftovers(&prefix).is_empty(),
        "the killed lab is still there before cleanup"
    );

    // The next `up` (of another instance) removes the stale one.
    let other = lab(1500, IcmpPolicy::Block);
    assert!(
        leftovers(&prefix).is_empty(),
        "stale lab left: {:?}",
        leftovers(&prefix)
    );
    let _ = sleeper.wait();
    assert!(
        backhaul_lab::start_time(sleeper_pid).is_none(),
        "process in the lab was stopped"
    );
    let taps = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let taps = String::from_utf8_lossy(&taps.stdout);
    for t in &state.taps {
        assert!(
            !taps.contains(t.as_str()),
            "TAP {t} left in the host namespace"
        );
    }
    other.down().unwrap();

    // `down` of a name that is gone is not an error.
    let down = Command::new(exe())
        .args(["down", "--name", &name])
        .output()
        .unwrap();
    assert!(down.status.success());
}

pub fn dropped_lab_leaves_nothing_behind() {
    let (prefix, wire) = {
        let lab = lab(1500, IcmpPolicy::Block);
        let state = State::load(lab.prefix()).unwrap();
        assert!(
            lab.exec(Node::Gw, "sysctl", &["-n", "net.ipv4.ip_forward"])
                .unwrap()
                .trim()
                == "1"
        );
        (lab.prefix().to_owned(), state.processes[0].clone())
        // dropped here, as on a panic's unwind
    };
    assert!(
        leftovers(&prefix).is_empty(),
        "left: {:?}",
        leftovers(&prefix)
    );
    assert!(!wire.alive(), "wire stopped");
}

//! The trial of an auth policy: `authorize` without credentials, with an unknown
//! token, and with the token of every configured user whose token is known.

use super::{REPLAYED, Report, Sample, Verdict, brief, replay};
use crate::plugin::auth::{AuthKind, wit};
use crate::plugin::loaded::{Loaded, Trial};

pub fn run(loaded: &Loaded<AuthKind>, verbose: bool) -> Report {
    let mut report = Report::new(verbose);
    let mut trial = loaded.trial();
    let mut cases: Vec<(String, String, Option<&wit::UserInfo>)> = vec![
        ("no credentials".into(), String::new(), None),
        ("an unknown token".into(), "berry-trial-not-a-configured-token".into(), None),
    ];
    for user in loaded.data().iter().filter(|u| !u.token.is_empty()) {
        cases.push((format!("user {}'s token", brief(&user.id)), user.token.clone(), Some(user)));
    }
    let mut samples = Vec::new();
    for (situation, token, user) in cases {
        let request = wit::AuthRequest { token, model: String::new(), headers: Vec::new() };
        match trial.call(|store, b| b.authorize(store, &request)) {
            Err(e) => report.push(&situation, "failed", Verdict::Fail(e)),
            Ok(answer) => {
                let verdict = judge(&request, user, &answer);
                let shown = show(&answer);
                if samples.len() < REPLAYED {
                    samples.push(Sample { situation: situation.clone(), input: request, answer: shown.clone() });
                }
                report.push(situation, shown, verdict);
            }
        }
        if report.given_up() {
            break;
        }
    }
    let ask = |trial: &mut Trial<'_, AuthKind>, request: &wit::AuthRequest| {
        trial.call(|store, b| b.authorize(store, request)).map(|a| show(&a))
    };
    replay(&mut trial, &mut report, &samples, ask, "keep no state between calls");
    report
}

fn show(answer: &Result<wit::Principal, wit::Denial>) -> String {
    match answer {
        Ok(p) => format!("admitted as {:?}{}", brief(&p.id), if p.admin { " (admin)" } else { "" }),
        Err(d) => format!("refused {} {}", d.status, brief(&d.code)),
    }
}

fn judge(
    request: &wit::AuthRequest,
    user: Option<&wit::UserInfo>,
    answer: &Result<wit::Principal, wit::Denial>,
) -> Verdict {
    match (answer, user) {
        (Err(d), _) if !(400..500).contains(&d.status) => {
            Verdict::Warn(format!("a denial with status {} is answered 401 (deny with a 4xx status)", d.status))
        }
        (Ok(_), None) if request.token.is_empty() => {
            Verdict::Warn("admits a caller with no credentials: everyone may use the gateway".into())
        }
        (Ok(p), None) => Verdict::Warn(format!("admits an unknown token (as {:?})", brief(&p.id))),
        (Ok(_), Some(u)) if !u.enabled => {
            Verdict::Warn(format!("admits user {} although it is disabled", brief(&u.id)))
        }
        (Err(d), Some(u)) if u.enabled => Verdict::Warn(format!(
            "refuses configured user {} with its own token ({} {}): the policy may need headers this trial does not send",
            brief(&u.id),
            d.status,
            brief(&d.code)
        )),
        _ => Verdict::Pass,
    }
}

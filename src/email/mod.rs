//! Outgoing email: what each message says, and its delivery. A message is sealed by the
//! server (its body carries a one-time token) and queued by the definer function that
//! decides it is due, in the transaction of the change, to an address that function
//! looked up; the worker delivers committed rows ([`sender`]).

pub mod sender;

use std::time::Duration;

/// A message to queue: the subject in clear (it is on the envelope), the body sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub subject: String,
    pub body: String,
}

fn hours(ttl: Duration) -> String {
    match ttl.as_secs() / 3600 {
        1 => "one hour".into(),
        h if h % 24 == 0 && h >= 48 => format!("{} days", h / 24),
        h => format!("{h} hours"),
    }
}

/// One line, no control characters: safe in a subject header.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The verification email sent at registration and on request.
pub fn verification(app_url: &str, token: &str, ttl: Duration) -> Message {
    Message {
        subject: "Confirm your email address".into(),
        body: format!(
            "Confirm your email address for Palisade by opening this link within {}:\n\n\
             {app_url}/verify-email?token={token}\n\n\
             (API clients: POST the token to /v1/auth/verify-email/confirm.)\n\
             If you did not create an account, ignore this email.",
            hours(ttl)
        ),
    }
}

/// The password-reset email.
pub fn password_reset(app_url: &str, token: &str, ttl: Duration) -> Message {
    Message {
        subject: "Reset your password".into(),
        body: format!(
            "Someone asked to reset the password of your Palisade account. To choose a new one, \
             open this link within {}:\n\n{app_url}/reset-password?token={token}\n\n\
             (API clients: POST the token and new_password to /v1/auth/password-reset/confirm.)\n\
             If it was not you, ignore this email; your password is unchanged.",
            hours(ttl)
        ),
    }
}

/// Where the invitee's client shows the invitation; the emailed link is this path with
/// `?token=`.
pub const ACCEPT_LINK_PATH: &str = "/invitations/accept";

/// What an invitation email needs to say.
pub struct Invitation<'a> {
    pub inviter: &'a str,
    pub inviter_email: &'a str,
    pub org: &'a str,
    pub role: &'a str,
    pub email: &'a str,
    pub token: &'a str,
    pub ttl: Duration,
}

/// The invitation email.
pub fn invitation(app_url: &str, i: &Invitation<'_>) -> Message {
    Message {
        subject: one_line(&format!(
            "{} invited you to join {} on Palisade",
            i.inviter, i.org
        )),
        body: format!(
            "{inviter} ({inviter_email}) invited you to join {org} on Palisade as {role}.\n\n\
             Accept the invitation: {app_url}{ACCEPT_LINK_PATH}?token={token}\n\n\
             The link works once, for {valid}, and only for the account registered with \
             {email}. If you did not expect this invitation, ignore this email or decline it.\n",
            inviter = i.inviter,
            inviter_email = i.inviter_email,
            org = i.org,
            role = i.role,
            token = i.token,
            email = i.email,
            valid = hours(i.ttl),
        ),
    }
}

/// A usage threshold an organization reached (80 % or 100 % of a plan limit).
pub struct UsageNotice<'a> {
    pub org_name: &'a str,
    pub org_id: uuid::Uuid,
    pub meter: &'a str,
    pub period: chrono::NaiveDate,
    pub threshold: i32,
    pub used: &'a str,
    pub limit: i64,
    pub plan: &'a str,
}

/// The notice sent once per meter per period to an org's owners and admins.
pub fn usage_notice(app_url: &str, n: &UsageNotice<'_>) -> Message {
    let meter = n.meter.replace('_', " ");
    let what = if n.threshold >= 100 {
        "has reached".to_owned()
    } else {
        format!("has used {} % of", n.threshold)
    };
    Message {
        subject: one_line(&format!(
            "{}: {meter} {what} the {} plan's limit",
            n.org_name, n.plan
        )),
        body: format!(
            "Your organization {org} {what} its {meter} limit for {period}: {used} of {limit} \
             on the {plan} plan.\n\n\
             Usage: {app_url}/orgs/{id}/usage (API: GET /v1/orgs/{id}/usage).\n\
             Upgrade the plan to raise the limit.",
            org = one_line(n.org_name),
            period = n.period.format("%Y-%m"),
            used = n.used,
            limit = n.limit,
            plan = n.plan,
            id = n.org_id,
        ),
    }
}

/// To an org's owners when billing moved the org to another plan.
pub fn plan_changed(
    app_url: &str,
    org_id: uuid::Uuid,
    from: &str,
    to: &str,
    status: &str,
) -> Message {
    let why = match status {
        "past_due" => {
            " because a payment is overdue and its grace period has ended; \
                       paying the open invoice restores the plan"
        }
        "canceled" => " because the subscription ended",
        _ => "",
    };
    Message {
        subject: one_line(&format!("Your organization is now on the {to} plan")),
        body: format!(
            "Your organization moved from the {from} plan to the {to} plan{why}.\n\n\
             Billing: {app_url}/orgs/{org_id}/billing (API: GET /v1/orgs/{org_id}/billing)."
        ),
    }
}

/// To an org's owners when Stripe could not collect an invoice.
pub fn payment_failed(app_url: &str, org_id: uuid::Uuid, grace_days: u64) -> Message {
    Message {
        subject: "A payment for your organization failed".to_owned(),
        body: format!(
            "We could not collect the latest invoice of your organization's subscription. \
             Stripe will retry; update the payment method in the billing portal \
             (API: POST /v1/orgs/{org_id}/billing/portal-session).\n\n\
             If the invoice is still unpaid {grace_days} days after it fell due, the \
             organization moves to the free plan's limits until it is paid.\n\n\
             Billing: {app_url}/orgs/{org_id}/billing"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_their_link_and_validity() {
        let v = verification("http://app", "tok", Duration::from_secs(24 * 3600));
        assert!(
            v.body.contains("http://app/verify-email?token=tok") && v.body.contains("24 hours")
        );
        let r = password_reset("http://app", "tok", Duration::from_secs(3600));
        assert!(r.body.contains("/reset-password?token=tok") && r.body.contains("one hour"));
        let i = invitation(
            "http://app",
            &Invitation {
                inviter: "Ada\nX",
                inviter_email: "ada@example.com",
                org: "Acme",
                role: "admin",
                email: "bo@example.com",
                token: "tok",
                ttl: Duration::from_secs(7 * 24 * 3600),
            },
        );
        assert_eq!(i.subject, "Ada X invited you to join Acme on Palisade");
        assert!(i.body.contains("/invitations/accept?token=tok") && i.body.contains("7 days"));
    }
}

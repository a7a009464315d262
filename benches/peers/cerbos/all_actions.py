#!/usr/bin/env python3
"""Every action of the schema, asked of a small directory built to reach
every partner rule: writes OUT_DIR/entities.json (Cedar entity JSON for
`partnergate import`) and OUT_DIR/questions.txt (`POST<TAB>/v1/is_authorized
<TAB>BODY` lines, contexts included) for `cerbos_feed requests` and
`cerbos_feed check` (check-all-actions.sh runs them).

The users: administrators (active, dismissed, invited, of another
account), a member, and partners with all, some or no scopes, unverified,
of an uncertified company, whose access has ended or will end, and
administrators who are partners of the same or another company. Every user
asks every action on every resource of its kind; invitations and grants
with each invitee (gold or silver, certified or not, same company or
another) and each access (none, narrower, wider, without end, with a later
end); renewals with each access. Dates are relative to now, as both
deciders read the clock."""
import datetime
import json
import os
import sys

NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def at(days):
    return (NOW + datetime.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


ALL = ["users", "settings", "integrations", "billing"]
COMPANIES = {"c1": ("gold", True), "c2": ("gold", True), "c3": ("gold", False), "c4": ("silver", True)}
ACCOUNT_ACTIONS = ["view_account", "configure_account", "configure_integrations", "manage_billing",
                   "invite_user", "view_employees", "invite_partner"]
USER_ACTIONS = ["edit_profile", "dismiss_user", "rehire_user", "grant_admin", "revoke_admin",
                "disable_two_factor", "grant_partner_access", "renew_partner_access", "end_partner_access"]
INVITEES = [("c1", "gold", True), ("c2", "gold", True), ("c1", "silver", True), ("c1", "gold", False)]
ACCESSES = [None, (["users"], at(10)), (["users", "billing"], at(10)), (["users"], None),
            (["users"], at(180)), ([], None)]


def partner(company, verified=True, scopes=ALL, expires=None):
    p = {"company": company, "verified": verified}
    if scopes is not None:
        p["scopes"] = scopes
    if expires:
        p["expires_at"] = expires
    return p


# (id, account, is_admin, status, partner)
USERS = [
    ("admin", "a1", True, "active", None),
    ("member", "a1", False, "active", None),
    ("dismissed_admin", "a1", True, "dismissed", None),
    ("invited_admin", "a1", True, "invited", None),
    ("other_admin", "a2", True, "active", None),
    ("partner", "a1", False, "active", partner("c1")),
    ("settings_partner", "a1", True, "active", partner("c1", scopes=["settings"])),
    ("billing_partner", "a1", False, "active", partner("c1", scopes=["billing", "integrations"])),
    ("noscope_partner", "a1", False, "active", partner("c1", scopes=None)),
    ("unverified_partner", "a1", False, "active", partner("c1", verified=False)),
    ("uncertified_partner", "a1", False, "active", partner("c3")),
    ("ended_partner", "a1", False, "active", partner("c1", expires=at(-7))),
    ("users_partner", "a1", False, "active", partner("c1", scopes=["users"], expires=at(30))),
    ("colleague", "a1", True, "active", partner("c1", scopes=["users"])),
    ("stranger", "a1", True, "active", partner("c2", scopes=["users"])),
    ("plain_partner_c2", "a1", False, "active", partner("c2")),
    ("far", "a2", False, "active", None),
    ("far_partner", "a2", False, "active", partner("c1")),
]


def ref(ty, i):
    return {"__entity": {"type": ty, "id": i}}


def datetime_value(s):
    return {"__extn": {"fn": "datetime", "arg": s}}


def user_entity(uid, account, is_admin, status, p):
    attrs = {"email": f"{uid}@{account}.example", "account": ref("Account", account),
             "is_admin": is_admin, "status": status, "two_factor": True}
    if p:
        p = dict(p, company=ref("PartnerCompany", p["company"]))
        if "expires_at" in p:
            p["expires_at"] = datetime_value(p["expires_at"])
        attrs["partner"] = p
    return {"uid": {"type": "User", "id": uid}, "parents": [{"type": "Account", "id": account}],
            "attrs": attrs}


def entities():
    out = [{"uid": {"type": "Account", "id": a}, "attrs": {"name": f"Account {a}"}, "parents": []}
           for a in ("a1", "a2")]
    out += [{"uid": {"type": "PartnerCompany", "id": c},
             "attrs": {"name": f"Company {c}", "status": s, "certified": cert}, "parents": []}
            for c, (s, cert) in COMPANIES.items()]
    return out + [user_entity(*u) for u in USERS]


def context(invitee, access):
    ctx = {}
    if invitee:
        c, status, certified = invitee
        ctx["invitee"] = {"company": ref("PartnerCompany", c), "status": status, "certified": certified}
    if access:
        scopes, expires = access
        ctx["access"] = {"scopes": scopes}
        if expires:
            ctx["access"]["expires_at"] = datetime_value(expires)
    return ctx


def questions():
    users = [u[0] for u in USERS]
    for p in users:
        for action in ACCOUNT_ACTIONS + USER_ACTIONS:
            on_account = action in ACCOUNT_ACTIONS
            resources = [f'Account::"{a}"' for a in ("a1", "a2")] if on_account else \
                [f'User::"{u}"' for u in users]
            invitees = INVITEES if action in ("invite_partner", "grant_partner_access") else [None]
            accesses = ACCESSES if action in ("invite_partner", "grant_partner_access",
                                              "renew_partner_access") else [None]
            for r in resources:
                for inv in invitees:
                    for acc in accesses:
                        q = {"principal": f'User::"{p}"', "action": f'Action::"{action}"', "resource": r}
                        ctx = context(inv, acc)
                        if ctx:
                            q["context"] = ctx
                        yield q


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: all_actions.py OUT_DIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "entities.json"), "w") as f:
        json.dump(entities(), f, indent=1)
    n = 0
    with open(os.path.join(out, "questions.txt"), "w") as f:
        for q in questions():
            f.write("POST\t/v1/is_authorized\t" + json.dumps(q, separators=(",", ":")) + "\n")
            n += 1
    print(f"ALL_ACTIONS users={len(USERS)} actions={len(ACCOUNT_ACTIONS) + len(USER_ACTIONS)} questions={n}")


if __name__ == "__main__":
    main()

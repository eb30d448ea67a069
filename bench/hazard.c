/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Hazard campaign: a guest that keeps issuing BOT transactions (GESN, INQUIRY, READ CAPACITY,
 * TEST UNIT READY, READ(10)) with a few ms between them, and N migrations back and forth that
 * land at a random phase of a transaction; plain QMP migrate against safe-migrate, on QEMU 7.2
 * and 10.0. Counts destination crashes, wrong bytes handed to the guest, holds, extra
 * attempts and time, and prints a table. */
#include "common.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

static gint opt_migrations = 20, opt_gap_ms = 3, opt_ram_mb = 4;
static gint64 opt_seed = 0;
static char *opt_qemu, *opt_mode, *opt_machine;
static gboolean opt_verbose;

static const GOptionEntry entries[] = {
    {"migrations", 'n', 0, G_OPTION_ARG_INT, &opt_migrations,
     "Migrations per QEMU and mode (20; 1000 is the reference run)", "N"},
    {"qemu", 0, 0, G_OPTION_ARG_STRING, &opt_qemu, "7.2, 10.0 or both (both)", "VERSION"},
    {"mode", 0, 0, G_OPTION_ARG_STRING, &opt_mode, "plain, gate or both (both)", "MODE"},
    {"machine", 0, 0, G_OPTION_ARG_STRING, &opt_machine, "Machine type (pc)", "TYPE"},
    {"gap-ms", 0, 0, G_OPTION_ARG_INT, &opt_gap_ms, "Guest think time between transactions (3)",
     "MS"},
    {"ram-mb", 0, 0, G_OPTION_ARG_INT, &opt_ram_mb, "Guest RAM made non-zero, MiB (4)", "MB"},
    {"seed", 0, 0, G_OPTION_ARG_INT64, &opt_seed, "Random seed (default: from the clock)", "N"},
    {"verbose", 'v', 0, G_OPTION_ARG_NONE, &opt_verbose, "One line per migration", NULL},
    G_OPTION_ENTRY_NULL,
};

/* ---- The guest's workload ------------------------------------------------------------------ */

enum { K_GESN, K_INQUIRY, K_RDCAP, K_TUR, K_READ10, N_KINDS };
static const char *const kind_names[N_KINDS] = {"GESN", "INQUIRY", "READ CAPACITY",
                                                "TEST UNIT READY", "READ(10)"};

typedef enum { PHASE_IDLE, PHASE_CBW_SENT, PHASE_CSW_PENDING, N_PHASES } Phase;
static const char *const phase_names[N_PHASES] = {"between transactions", "CBW sent",
                                                  "data fetched, CSW pending"};

typedef enum { OUT_OK, OUT_WRONG, OUT_BAD_STATUS, OUT_CRASH, OUT_ERROR } Outcome;

typedef struct {
    guint migrations, crashes, wrong, bad_status, errors, holds, extra_attempts, gate_failures;
    guint transactions, pairs;
    guint parked[N_PHASES];
    double seconds;
} Stats;

typedef struct {
    Pair *p;
    GRand *rand;
    Stats *st;
    guint8 ref[N_KINDS][64]; /* the answers before any migration (READ(10): from the ISO) */
    gsize ref_len[N_KINDS];
    guint32 last_lba; /* of the ISO */
    /* The transaction in flight, if any. */
    Phase phase;
    guint kind;
    guint32 lba;
} Campaign;

static RigCommand command(guint kind, guint32 lba)
{
    switch (kind) {
    case K_GESN:
        return rig_cmd_gesn();
    case K_INQUIRY:
        return rig_cmd_inquiry();
    case K_RDCAP:
        return rig_cmd_read_capacity();
    case K_TUR:
        return rig_cmd_test_unit_ready();
    default:
        return rig_cmd_read10(lba, 1);
    }
}

static gboolean expected(Campaign *c, guint kind, guint32 lba, guint8 *out, gsize *len)
{
    if (kind == K_READ10) {
        *len = 2048;
        return rig_iso_sector(lba, out);
    }
    memcpy(out, c->ref[kind], c->ref_len[kind]);
    *len = c->ref_len[kind];
    return TRUE;
}

/* The steady answer: ask until two answers agree (a CD-ROM reports a media event once). */
static gboolean learn_references(Campaign *c, GError **error)
{
    for (guint k = 0; k < N_KINDS; k++) {
        if (k == K_READ10 || k == K_TUR)
            continue;
        RigCommand cmd = command(k, 0);
        guint8 prev[64], buf[64];
        gsize prev_len = G_MAXSIZE, len = 0;
        gboolean steady = FALSE;
        for (int i = 0; i < 6 && !steady; i++) {
            guint8 status = 0xff;
            if (!rig_guest_transact(c->p->guest, 0, &cmd, buf, &len, &status, error))
                return FALSE;
            steady = status == 0 && len == prev_len && memcmp(buf, prev, len) == 0;
            memcpy(prev, buf, len);
            prev_len = status == 0 ? len : G_MAXSIZE;
        }
        if (!steady) {
            g_set_error(error, RIG_ERROR, RIG_ERROR_PROTOCOL, "no steady answer to %s",
                        kind_names[k]);
            return FALSE;
        }
        memcpy(c->ref[k], buf, len);
        c->ref_len[k] = len;
    }
    c->last_lba = ((guint32)c->ref[K_RDCAP][0] << 24 | (guint32)c->ref[K_RDCAP][1] << 16 |
                   (guint32)c->ref[K_RDCAP][2] << 8 | c->ref[K_RDCAP][3]);
    return TRUE;
}

/* Why a transfer failed: the QEMU holding the guest died (how), or something else. */
static Outcome failure(Campaign *c, GError **error)
{
    int sig = 0;
    if (!rig_vm_alive(c->p->src) || g_error_matches(*error, RIG_ERROR, RIG_ERROR_VM_DIED)) {
        if (rig_vm_wait_exit(c->p->src, 5000, &sig, NULL)) {
            if (sig != SIGSEGV)
                printf("    note: the destination ended with signal %d, not SIGSEGV\n", sig);
            if (opt_verbose)
                printf("    destination died (signal %d): %s\n", sig, (*error)->message);
            return OUT_CRASH;
        }
    }
    if (opt_verbose)
        printf("    transfer failed: %s\n", (*error)->message);
    return OUT_ERROR;
}

/* Runs the transaction in flight to its end on the VM holding the guest, and checks it. */
static Outcome complete(Campaign *c, GError **error)
{
    RigCommand cmd = command(c->kind, c->lba);
    guint8 want[2048], buf[2048];
    gsize want_len = 0;
    if (!expected(c, c->kind, c->lba, want, &want_len))
        g_error("no reference for %s", kind_names[c->kind]);
    Outcome out = OUT_OK;
    if (c->phase == PHASE_CBW_SENT && cmd.data_in) {
        gssize got = rig_guest_data_in(c->p->guest, 0, buf, cmd.data_len, error);
        if (got < 0)
            return failure(c, error);
        if ((gsize)got != want_len || memcmp(buf, want, want_len) != 0)
            out = OUT_WRONG;
    }
    guint8 status = 0xff;
    if (!rig_guest_read_csw(c->p->guest, 0, &status, NULL, error))
        return failure(c, error);
    c->phase = PHASE_IDLE;
    c->st->transactions++;
    return out == OUT_OK && status != 0 ? OUT_BAD_STATUS : out;
}

/* Starts a transaction and leaves it at `phase`. Bytes fetched before the migration are
 * checked too. */
static Outcome start(Campaign *c, guint kind, Phase phase, GError **error)
{
    c->kind = kind;
    c->lba = 16 + g_rand_int_range(c->rand, 0, (gint32)MAX(c->last_lba - 16, 1u));
    RigCommand cmd = command(kind, c->lba);
    if (!rig_guest_send_cbw(c->p->guest, 0, &cmd, NULL, error))
        return failure(c, error);
    c->phase = PHASE_CBW_SENT;
    if (phase == PHASE_CSW_PENDING && cmd.data_in) {
        guint8 want[2048], buf[2048];
        gsize want_len = 0;
        expected(c, kind, c->lba, want, &want_len);
        gssize got = rig_guest_data_in(c->p->guest, 0, buf, cmd.data_len, error);
        if (got < 0)
            return failure(c, error);
        c->phase = PHASE_CSW_PENDING;
        if ((gsize)got != want_len || memcmp(buf, want, want_len) != 0)
            return OUT_WRONG;
    } else if (phase == PHASE_CSW_PENDING) {
        c->phase = PHASE_CSW_PENDING; /* no data stage */
    }
    return OUT_OK;
}

static void gap(Campaign *c)
{
    /* A few ms, jittered: the guest's own think time between transactions. */
    g_usleep((gulong)(opt_gap_ms * 1000 + g_rand_int_range(c->rand, 0, opt_gap_ms * 500 + 1)));
}

static guint random_kind(Campaign *c)
{
    return (guint)g_rand_int_range(c->rand, 0, N_KINDS);
}

/* A few whole transactions with the gap between them. */
static Outcome workload(Campaign *c, guint n, GError **error)
{
    for (guint i = 0; i < n; i++) {
        Outcome o = start(c, random_kind(c), PHASE_CBW_SENT, error);
        if (o == OUT_OK)
            o = complete(c, error);
        if (o != OUT_OK)
            return o;
        gap(c);
    }
    return OUT_OK;
}

static void count(Stats *st, Outcome o)
{
    switch (o) {
    case OUT_OK:
        break;
    case OUT_WRONG:
        st->wrong++;
        break;
    case OUT_BAD_STATUS:
        st->bad_status++;
        break;
    case OUT_CRASH:
        st->crashes++;
        break;
    case OUT_ERROR:
        st->errors++;
        break;
    }
}

static gboolean new_pair(Campaign *c, RigQemu qemu, const char *machine, GError **error)
{
    pair_free(c->p);
    c->p = pair_new(qemu, machine, (guint)opt_ram_mb, error);
    if (!c->p)
        return FALSE;
    c->st->pairs++;
    c->phase = PHASE_IDLE;
    return learn_references(c, error);
}

static char *runstate(RigVm *vm)
{
    g_autoptr(GError) error = NULL;
    char *s = rig_vm_runstate(vm, &error);
    return s ? s : g_strdup("unreachable");
}

/* ---- One migration ---------------------------------------------------------------------- */

/* Plain QMP migrate; the guest finishes its transaction wherever the VM runs afterwards. */
static Outcome plain(Campaign *c, gboolean *pair_lost, GError **error)
{
    g_autofree char *status = rig_migrate(c->p->src, c->p->dst, NULL, error);
    if (!status)
        return OUT_ERROR;
    if (!g_str_equal(status, "completed")) {
        g_set_error(error, RIG_ERROR, RIG_ERROR_PROTOCOL, "migration ended '%s'", status);
        *pair_lost = TRUE;
        return OUT_ERROR;
    }
    if (!pair_swap(c->p, FALSE, error)) {
        *pair_lost = TRUE;
        return OUT_ERROR;
    }
    Outcome o = c->phase == PHASE_IDLE ? workload(c, 1, error) : complete(c, error);
    *pair_lost = o == OUT_CRASH || o == OUT_ERROR;
    return o;
}

/* safe-migrate: when it holds, the source runs again and the guest finishes its
 * transaction there; then it waits for the gate's verdict. */
static Outcome gated(Campaign *c, gboolean *pair_lost, GError **error)
{
    g_autofree char *src = pair_src_addr(c->p), *dst = pair_dst_addr(c->p);
    g_autofree char *uri = rig_migration_uri();
    const char *args[] = {"--source",
                          src,
                          "--dest",
                          dst,
                          "--uri",
                          uri,
                          "--dest-prepare",
                          c->p->dst_prepare,
                          "--backoff",
                          "20ms",
                          "--max-attempts",
                          "50",
                          "--max-hold",
                          "60s",
                          NULL};
    Gate *g = gate_spawn(args, error);
    if (!g)
        return OUT_ERROR;
    Outcome o = OUT_OK;
    gboolean replaced = FALSE;
    json_object *ev;
    while ((ev = gate_next(g))) {
        const char *name = event_name(ev);
        if (g_str_equal(name, "dest-prepare"))
            replaced = TRUE;
        if (g_str_equal(name, "hold") && c->phase != PHASE_IDLE) {
            /* The gate calls the attempt off; once the source runs, the guest goes on. */
            for (int i = 0; i < 1000; i++) {
                g_autofree char *state = runstate(c->p->src);
                if (g_str_equal(state, "running"))
                    break;
                g_usleep(1000);
            }
            Outcome done = complete(c, error);
            if (done != OUT_OK && o == OUT_OK)
                o = done;
        }
        json_object_put(ev);
    }
    int code = gate_finish(g);
    if (g->result) {
        c->st->holds += (guint)event_int(g->result, "holds", 0);
        c->st->extra_attempts += (guint)MAX(event_int(g->result, "attempts", 1) - 1, 0);
    }
    if (opt_verbose && code != 0)
        printf("    safe-migrate exited %d: %s\n", code,
               g->result ? json_object_to_json_string(g->result) : "(no result)");
    gate_free(g);
    if (o != OUT_OK) {
        *pair_lost = TRUE;
        return o;
    }
    if (code != 0) {
        /* Called off: the VM keeps running on the source, where the guest finishes. */
        c->st->gate_failures++;
        if (c->phase != PHASE_IDLE)
            o = complete(c, error);
        *pair_lost = TRUE; /* a fresh pair: the destination's state is not worth untangling */
        return o;
    }
    if (!pair_swap(c->p, replaced, error)) {
        *pair_lost = TRUE;
        return OUT_ERROR;
    }
    o = c->phase == PHASE_IDLE ? workload(c, 1, error) : complete(c, error);
    *pair_lost = o == OUT_CRASH || o == OUT_ERROR;
    return o;
}

static void campaign(RigQemu qemu, const char *machine, gboolean gate, Stats *st, GRand *rand)
{
    Campaign c = {.rand = rand, .st = st};
    g_autoptr(GError) error = NULL;
    gint64 t0 = g_get_monotonic_time();
    if (!new_pair(&c, qemu, machine, &error))
        g_error("cannot start a VM pair: %s", error->message);
    for (int i = 0; i < opt_migrations; i++) {
        g_clear_error(&error);
        Outcome o = workload(&c, (guint)g_rand_int_range(rand, 1, 5), &error);
        if (o != OUT_OK)
            g_error("the guest failed before migration %d: %s", i + 1,
                    error ? error->message : "wrong bytes");
        Phase phase = (Phase)g_rand_int_range(rand, 0, N_PHASES);
        guint kind = random_kind(&c);
        if (phase != PHASE_IDLE && (o = start(&c, kind, phase, &error)) != OUT_OK)
            g_error("the guest failed before migration %d: %s", i + 1,
                    error ? error->message : "wrong bytes");
        st->parked[phase]++;
        gboolean lost = FALSE;
        o = gate ? gated(&c, &lost, &error) : plain(&c, &lost, &error);
        st->migrations++;
        count(st, o);
        if (opt_verbose || o != OUT_OK)
            printf("  %s %-5s #%-4d %-15s %-26s -> %s%s%s\n", rig_qemu_name(qemu),
                   gate ? "gate" : "plain", i + 1, phase == PHASE_IDLE ? "-" : kind_names[kind],
                   phase_names[phase],
                   (const char *[]){"ok", "WRONG BYTES", "bad status", "DEST CRASHED", "error"}[o],
                   error ? ": " : "", error ? error->message : "");
        fflush(stdout);
        if (lost && i + 1 < opt_migrations) {
            g_clear_error(&error);
            if (!new_pair(&c, qemu, machine, &error))
                g_error("cannot start a VM pair: %s", error->message);
        }
    }
    pair_free(c.p);
    st->seconds = (double)(g_get_monotonic_time() - t0) / G_USEC_PER_SEC;
}

int main(int argc, char **argv)
{
    bench_env_defaults();
    g_autoptr(GOptionContext) ctx = g_option_context_new("- the hazard, plain vs safe-migrate");
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_autoptr(GError) error = NULL;
    if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
        g_printerr("%s\n", error->message);
        return 2;
    }
    if (opt_seed == 0)
        opt_seed = g_get_real_time() % 1000000;
    const char *machine = opt_machine ? opt_machine : "pc";
    const char *q = opt_qemu ? opt_qemu : "both", *m = opt_mode ? opt_mode : "both";
    printf("Hazard campaign: %d migrations per row, machine %s, guest gap %d ms, seed "
           "%" G_GINT64_FORMAT "\n",
           opt_migrations, machine, opt_gap_ms, opt_seed);
    fflush(stdout);
    RigQemu qemus[] = {RIG_QEMU_72, RIG_QEMU_10};
    Stats stats[2][2] = {0};
    gboolean ran[2][2] = {{FALSE}};
    for (guint qi = 0; qi < 2; qi++) {
        if (!g_str_equal(q, "both") && !g_str_equal(q, rig_qemu_name(qemus[qi])))
            continue;
        for (guint gi = 0; gi < 2; gi++) {
            if (!g_str_equal(m, "both") && !g_str_equal(m, gi ? "gate" : "plain"))
                continue;
            /* Same seed for plain and gate: the same phases and commands in the same order. */
            g_autoptr(GRand) rand = g_rand_new_with_seed((guint32)opt_seed + qi);
            campaign(qemus[qi], machine, gi, &stats[qi][gi], rand);
            ran[qi][gi] = TRUE;
        }
    }
    printf("\n%-5s %-13s %6s %8s %7s %7s %7s %6s %6s %8s %6s %8s %9s\n", "QEMU", "mode", "migr",
           "crashes", "wrong", "badcsw", "errors", "holds", "extra", "gatefail", "pairs", "time s",
           "s/migr");
    for (guint qi = 0; qi < 2; qi++)
        for (guint gi = 0; gi < 2; gi++) {
            if (!ran[qi][gi])
                continue;
            Stats *s = &stats[qi][gi];
            char holds[16] = "-", extra[16] = "-", fails[16] = "-";
            if (gi) {
                g_snprintf(holds, sizeof holds, "%u", s->holds);
                g_snprintf(extra, sizeof extra, "%u", s->extra_attempts);
                g_snprintf(fails, sizeof fails, "%u", s->gate_failures);
            }
            printf("%-5s %-13s %6u %8u %7u %7u %7u %6s %6s %8s %6u %8.1f %9.3f\n",
                   rig_qemu_name(qemus[qi]), gi ? "safe-migrate" : "plain", s->migrations,
                   s->crashes, s->wrong, s->bad_status, s->errors, holds, extra, fails, s->pairs,
                   s->seconds, s->migrations ? s->seconds / s->migrations : 0.0);
        }
    printf("\nPhase at migration start (per row): ");
    for (guint qi = 0; qi < 2; qi++)
        for (guint gi = 0; gi < 2; gi++)
            if (ran[qi][gi]) {
                Stats *s = &stats[qi][gi];
                printf("%s %s: idle %u, CBW sent %u, CSW pending %u; ", rig_qemu_name(qemus[qi]),
                       gi ? "gate" : "plain", s->parked[0], s->parked[1], s->parked[2]);
            }
    printf(
        "\ncrashes: destination QEMU died when the guest fetched; wrong: bytes differing from\n"
        "the answer before migration (GOOD status); badcsw: CSW not GOOD; errors: other\n"
        "transfer failures; extra: attempts beyond the first; gatefail: safe-migrate exit != 0;\n"
        "pairs: VM pairs used (a crash ends a pair)\n");
    return 0;
}

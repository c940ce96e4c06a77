/*
 * ovt-peer: a guest program that talks to the VMware backdoor through
 * open-vm-tools' own client library, libvmtools.so.0 (Debian package
 * open-vm-tools). It exists to check that the simulator serves an unmodified
 * third-party implementation, and to time that implementation side by side
 * with ours. vmware-rpctool cannot be used for this: it refuses to start when
 * CPUID names another hypervisor, so we call the library directly.
 *
 * No open-vm-tools header is needed: the few prototypes used are declared
 * below from the library's documented signatures (Bool is a char there).
 *
 * Run `ovt-peer help` for the commands.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef char ovt_bool; /* the library's Bool */

struct ovt_channel; /* opaque: only ever handled through a pointer */

/* One-shot RPCI: open a channel, send, receive, close. On success *reply is
 * the malloc'd answer without its "1 " prefix; on failure it is the host's
 * text after "0 ", or the library's own "RpcOut: ..." description. */
extern ovt_bool RpcOut_SendOneRaw(void *request, size_t request_len,
                                  char **reply, size_t *reply_len);
/* The message layer under RpcOut: a channel kept open across messages. The
 * received buffer belongs to the channel and stays valid until its next use. */
extern struct ovt_channel *Message_Open(uint32_t protocol);
extern ovt_bool Message_Send(struct ovt_channel *chan,
                             const unsigned char *buf, size_t len);
extern ovt_bool Message_Receive(struct ovt_channel *chan,
                                unsigned char **buf, size_t *len);
extern ovt_bool Message_Close(struct ovt_channel *chan);
/* The GETVERSION knock. */
extern ovt_bool VmCheck_GetVersion(uint32_t *version, uint32_t *type);

#define RPCI_PROTOCOL 0x49435052u /* "RPCI" */

/* Exit statuses, the same as the Rust peer's. */
enum { EXIT_OK = 0, EXIT_HOST_SAID_NO = 1, EXIT_BROKEN = 2 };

static const char usage[] =
    "usage: ovt-peer [--via oneshot|channel] COMMAND\n"
    "commands:\n"
    "  get KEY               print the value raw to stdout; exit 1 if missing\n"
    "  set KEY VALUE         info-set KEY VALUE\n"
    "  log TEXT              log TEXT\n"
    "  rpc CMD               send CMD verbatim, print the reply after its status\n"
    "  version               GETVERSION knock (VmCheck_GetVersion)\n"
    "  bench get KEY N [MODE]\n"
    "  bench set KEY VALUE N [MODE]\n"
    "  bench log TEXT N [MODE]\n"
    "  bench rpc CMD N [MODE]\n"
    "  bench version N\n"
    "MODE: reused (one channel through Message_*, opened once), per-op\n"
    "(RpcOut_SendOneRaw: open, send, receive, close each time) or both (default).\n"
    "--via picks the path of the single commands (default oneshot).\n"
    "Exit status: 0 ok, 1 the host answered \"0 ...\" (e.g. no such key),\n"
    "2 backdoor or usage error.\n";

/* A request as bytes; never NUL-terminated on the wire. */
struct request {
    char *bytes;
    size_t len;
};

/* What one RPC produced. `text` is owned (malloc'd) and NUL-terminated. */
struct outcome {
    int transport_ok; /* the exchange itself worked */
    int host_ok;      /* the host answered "1 " */
    char *text;       /* payload after the status, or an error description */
    size_t len;
};

static void outcome_free(struct outcome *o)
{
    free(o->text);
    o->text = NULL;
    o->len = 0;
}

static char *copy_bytes(const void *src, size_t len)
{
    char *dst = malloc(len + 1);
    if (dst == NULL) {
        fprintf(stderr, "ovt-peer: out of memory\n");
        exit(EXIT_BROKEN);
    }
    memcpy(dst, src, len);
    dst[len] = '\0';
    return dst;
}

static struct request make_request(const char *verb, const char *a, const char *b)
{
    struct request r;
    int n;
    if (b != NULL)
        n = asprintf(&r.bytes, "%s %s %s", verb, a, b);
    else if (verb != NULL)
        n = asprintf(&r.bytes, "%s %s", verb, a);
    else
        n = asprintf(&r.bytes, "%s", a);
    if (n < 0) {
        fprintf(stderr, "ovt-peer: out of memory\n");
        exit(EXIT_BROKEN);
    }
    r.len = (size_t)n;
    return r;
}

/* One RPC through RpcOut_SendOneRaw. Its FALSE means either a broken exchange
 * or a "0 " answer; the library's own failures all start with "RpcOut:". */
static struct outcome send_oneshot(const struct request *req)
{
    struct outcome o = {0, 0, NULL, 0};
    char *reply = NULL;
    size_t reply_len = 0;
    ovt_bool ok = RpcOut_SendOneRaw(req->bytes, req->len, &reply, &reply_len);
    if (reply == NULL) {
        o.text = copy_bytes("no reply", 8);
        o.len = 8;
        return o;
    }
    o.host_ok = ok != 0;
    o.transport_ok = o.host_ok || strncmp(reply, "RpcOut:", 7) != 0;
    o.text = copy_bytes(reply, reply_len);
    o.len = reply_len;
    free(reply);
    return o;
}

/* One RPC on an open channel through Message_Send and Message_Receive. */
static struct outcome send_on_channel(struct ovt_channel *chan, const struct request *req)
{
    struct outcome o = {0, 0, NULL, 0};
    unsigned char *reply = NULL;
    size_t reply_len = 0;
    if (!Message_Send(chan, (const unsigned char *)req->bytes, req->len)) {
        o.text = copy_bytes("Message_Send failed", 19);
        o.len = 19;
        return o;
    }
    if (!Message_Receive(chan, &reply, &reply_len)) {
        o.text = copy_bytes("Message_Receive failed", 22);
        o.len = 22;
        return o;
    }
    if (reply == NULL || reply_len < 2 || reply[1] != ' ' ||
        (reply[0] != '0' && reply[0] != '1')) {
        o.text = copy_bytes("reply without a \"0 \"/\"1 \" status", 32);
        o.len = 32;
        return o;
    }
    o.transport_ok = 1;
    o.host_ok = reply[0] == '1';
    o.text = copy_bytes(reply + 2, reply_len - 2);
    o.len = reply_len - 2;
    return o;
}

static struct ovt_channel *open_channel(void)
{
    struct ovt_channel *chan = Message_Open(RPCI_PROTOCOL);
    if (chan == NULL)
        fprintf(stderr, "ovt-peer: Message_Open(RPCI) failed\n");
    return chan;
}

/* A single RPC by the chosen path. */
static struct outcome send_once(int via_channel, const struct request *req)
{
    struct outcome o = {0, 0, NULL, 0};
    struct ovt_channel *chan;
    if (!via_channel)
        return send_oneshot(req);
    chan = open_channel();
    if (chan == NULL) {
        o.text = copy_bytes("no channel", 10);
        o.len = 10;
        return o;
    }
    o = send_on_channel(chan, req);
    if (!Message_Close(chan))
        fprintf(stderr, "ovt-peer: Message_Close failed\n");
    return o;
}

/* Maps an outcome to the exit status, reporting failures on stderr. */
static int judge(const struct outcome *o, const char *what)
{
    if (!o->transport_ok) {
        fprintf(stderr, "ovt-peer: %s: %s\n", what, o->text);
        return EXIT_BROKEN;
    }
    if (!o->host_ok) {
        fprintf(stderr, "ovt-peer: %s: host said: %s\n", what, o->text);
        return EXIT_HOST_SAID_NO;
    }
    return EXIT_OK;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void print_line(const char *op, size_t size, const char *mode, uint64_t n,
                       uint64_t total_ns)
{
    printf("peer=ovt op=%s size=%zu mode=%s n=%llu total_ns=%llu per_op_ns=%llu\n", op,
           size, mode, (unsigned long long)n, (unsigned long long)total_ns,
           (unsigned long long)(n == 0 ? 0 : total_ns / n));
    fflush(stdout);
}

static int parse_count(const char *s, uint64_t *n)
{
    char *end = NULL;
    unsigned long long v;
    if (s == NULL || *s == '\0' || *s == '-')
        return 0;
    v = strtoull(s, &end, 10);
    if (end == NULL || *end != '\0')
        return 0;
    *n = v;
    return 1;
}

enum { MODE_REUSED = 1, MODE_PER_OP = 2 };

static int parse_modes(const char *s, int *modes)
{
    if (s == NULL || strcmp(s, "both") == 0)
        *modes = MODE_REUSED | MODE_PER_OP;
    else if (strcmp(s, "reused") == 0)
        *modes = MODE_REUSED;
    else if (strcmp(s, "per-op") == 0)
        *modes = MODE_PER_OP;
    else
        return 0;
    return 1;
}

/* Times n runs of req per mode, after one untimed one-shot run that checks it
 * works. Backdoor calls per operation are (stats with N) - (stats with N = 0),
 * divided by N: the check run happens in both. `size` is what the line
 * reports; for get (size == SIZE_OF_REPLY) it is the value's length. */
#define SIZE_OF_REPLY ((size_t)-1)
static int bench_rpc(const char *op, const struct request *req, size_t size, uint64_t n,
                     int modes)
{
    struct outcome check = send_oneshot(req);
    int status = judge(&check, op);
    uint64_t i, start;
    if (size == SIZE_OF_REPLY)
        size = check.len;
    outcome_free(&check);
    if (status != EXIT_OK)
        return status;

    if (modes & MODE_REUSED) {
        struct ovt_channel *chan;
        start = now_ns();
        chan = open_channel();
        if (chan == NULL)
            return EXIT_BROKEN;
        for (i = 0; i < n; i++) {
            struct outcome o = send_on_channel(chan, req);
            status = judge(&o, op);
            outcome_free(&o);
            if (status != EXIT_OK)
                return status;
        }
        /* Close inside the timed region: the per-op mode pays for it too. */
        if (!Message_Close(chan)) {
            fprintf(stderr, "ovt-peer: Message_Close failed\n");
            return EXIT_BROKEN;
        }
        print_line(op, size, "reused", n, now_ns() - start);
    }
    if (modes & MODE_PER_OP) {
        start = now_ns();
        for (i = 0; i < n; i++) {
            struct outcome o = send_oneshot(req);
            status = judge(&o, op);
            outcome_free(&o);
            if (status != EXIT_OK)
                return status;
        }
        print_line(op, size, "per-op", n, now_ns() - start);
    }
    return EXIT_OK;
}

static int version_once(uint32_t *version, uint32_t *type)
{
    if (!VmCheck_GetVersion(version, type)) {
        fprintf(stderr, "ovt-peer: VmCheck_GetVersion failed\n");
        return EXIT_BROKEN;
    }
    return EXIT_OK;
}

static int bench_version(uint64_t n)
{
    uint32_t version = 0, type = 0;
    uint64_t i, start = now_ns();
    for (i = 0; i < n; i++) {
        int status = version_once(&version, &type);
        if (status != EXIT_OK)
            return status;
    }
    print_line("version", 0, "lb", n, now_ns() - start);
    return EXIT_OK;
}

static int bad_usage(const char *why)
{
    fprintf(stderr, "ovt-peer: %s\n%s", why, usage);
    return EXIT_BROKEN;
}

/* bench OP ARGS... N [MODE]: args[0] is OP. */
static int run_bench(int argc, char **argv)
{
    struct request req;
    const char *op = argc > 0 ? argv[0] : "";
    int fixed, modes, status;
    uint64_t n;
    size_t size;

    if (strcmp(op, "version") == 0) {
        if (argc != 2 || !parse_count(argv[1], &n))
            return bad_usage("bench version N");
        return bench_version(n);
    }
    if (strcmp(op, "get") == 0 || strcmp(op, "log") == 0 || strcmp(op, "rpc") == 0)
        fixed = 3; /* op, one argument, N */
    else if (strcmp(op, "set") == 0)
        fixed = 4; /* op, key, value, N */
    else
        return bad_usage("unknown bench operation");
    if ((argc != fixed && argc != fixed + 1) || !parse_count(argv[fixed - 1], &n) ||
        !parse_modes(argc > fixed ? argv[fixed] : NULL, &modes))
        return bad_usage("bad bench arguments");

    if (strcmp(op, "get") == 0) {
        req = make_request("info-get", argv[1], NULL);
        size = SIZE_OF_REPLY;
    } else if (strcmp(op, "set") == 0) {
        req = make_request("info-set", argv[1], argv[2]);
        size = strlen(argv[2]);
    } else if (strcmp(op, "log") == 0) {
        req = make_request("log", argv[1], NULL);
        size = strlen(argv[1]);
    } else {
        req = make_request(NULL, argv[1], NULL);
        size = SIZE_OF_REPLY;
    }
    status = bench_rpc(op, &req, size, n, modes);
    free(req.bytes);
    return status;
}

int main(int argc, char **argv)
{
    int via_channel = 0;
    struct request req;
    struct outcome o;
    int status;
    const char *cmd;

    argc--;
    argv++;
    if (argc >= 2 && strcmp(argv[0], "--via") == 0) {
        if (strcmp(argv[1], "channel") == 0)
            via_channel = 1;
        else if (strcmp(argv[1], "oneshot") != 0)
            return bad_usage("bad --via value");
        argc -= 2;
        argv += 2;
    }
    if (argc < 1)
        return bad_usage("no command");
    cmd = argv[0];

    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        fputs(usage, stdout);
        return EXIT_OK;
    }
    if (strcmp(cmd, "bench") == 0)
        return run_bench(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 && argc == 1) {
        uint32_t version = 0, type = 0;
        status = version_once(&version, &type);
        if (status == EXIT_OK)
            printf("version=%u type=%u\n", version, type);
        return status;
    }
    if (strcmp(cmd, "get") == 0 && argc == 2)
        req = make_request("info-get", argv[1], NULL);
    else if (strcmp(cmd, "set") == 0 && argc == 3)
        req = make_request("info-set", argv[1], argv[2]);
    else if (strcmp(cmd, "log") == 0 && argc == 2)
        req = make_request("log", argv[1], NULL);
    else if (strcmp(cmd, "rpc") == 0 && argc == 2)
        req = make_request(NULL, argv[1], NULL);
    else
        return bad_usage("bad arguments");

    o = send_once(via_channel, &req);
    status = judge(&o, cmd);
    if (status == EXIT_OK && strcmp(cmd, "get") == 0) {
        fwrite(o.text, 1, o.len, stdout);
    } else if (status != EXIT_BROKEN && strcmp(cmd, "rpc") == 0) {
        /* For a raw rpc the whole answer is the result, "0 ..." included. */
        fputs(status == EXIT_OK ? "1 " : "0 ", stdout);
        fwrite(o.text, 1, o.len, stdout);
        putchar('\n');
    }
    fflush(stdout);
    outcome_free(&o);
    free(req.bytes);
    return status;
}

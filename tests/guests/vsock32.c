/* A 32-bit vsock guest for tests/guest_vsock.rs: the same RPC through the i386 direct
 * socket calls and through socketcall(2), raw (no C library wrapper decides which), and
 * the registers a rewritten socket() must give back. Prints one line per check. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define AF_VSOCK 40
#define SOCK_STREAM 1

struct sockaddr_vm {
    unsigned short family, reserved;
    unsigned int port, cid;
    unsigned char flags, zero[3];
};

static long sc(int call, long *args) { return syscall(102, call, args); }

static int rpc(int fd, const char *cmd, char *out, int room) {
    unsigned char req[256];
    unsigned int n = strlen(cmd), body = 16 + 12 + n, words[7] = {1, 1, 1, 0, 2, 2, n};
    req[0] = body >> 24; req[1] = body >> 16; req[2] = body >> 8; req[3] = body;
    for (int i = 0; i < 7; i++) {
        req[4 + 4 * i] = words[i] >> 24; req[5 + 4 * i] = words[i] >> 16;
        req[6 + 4 * i] = words[i] >> 8; req[7 + 4 * i] = words[i];
    }
    memcpy(req + 32, cmd, n);
    if (write(fd, req, 4 + body) != (long)(4 + body)) return -1;
    unsigned char buf[512];
    int got = 0, r;
    while ((r = read(fd, buf + got, sizeof buf - got)) > 0) {
        got += r;
        if (got >= 4 && got >= 4 + (int)((buf[0] << 24) | (buf[1] << 16) | (buf[2] << 8) | buf[3])) break;
    }
    /* TYPE entry (16 bytes), then PAYLOAD: type, id, length, bytes. */
    if (got < 4 + 16 + 12) return -1;
    int len = (buf[4 + 16 + 8] << 24) | (buf[4 + 16 + 9] << 16) | (buf[4 + 16 + 10] << 8) | buf[4 + 16 + 11];
    if (len >= room || 4 + 28 + len > got) return -1;
    memcpy(out, buf + 32, len);
    out[len] = 0;
    return len;
}

int main(void) {
    char reply[256];
    struct sockaddr_vm any = {AF_VSOCK, 0, 0xffffffffu, 0xffffffffu}, host = {AF_VSOCK, 0, 976, 0};

    /* Direct calls, by int 0x80, with the registers checked after socket(). */
    int fd;
    unsigned int b, c, d;
    __asm__ volatile("int $0x80" : "=a"(fd), "=b"(b), "=c"(c), "=d"(d)
                     : "a"(359), "b"(AF_VSOCK), "c"(SOCK_STREAM), "d"(0) : "memory");
    printf("direct socket %s, registers %s\n", fd >= 0 ? "ok" : "failed",
           b == AF_VSOCK && c == SOCK_STREAM && d == 0 ? "kept" : "changed");
    long r = syscall(361, fd, &any, sizeof any);
    printf("direct bind %ld\n", r);
    r = syscall(362, fd, &host, sizeof host);
    printf("direct connect %ld\n", r);
    printf("direct rpc %s\n", rpc(fd, "info-get guestinfo.x", reply, sizeof reply) >= 0 ? reply : "failed");
    close(fd);

    /* socketcall. */
    long sargs[3] = {AF_VSOCK, SOCK_STREAM, 0};
    fd = sc(1, sargs);
    printf("socketcall socket %s\n", fd >= 0 ? "ok" : "failed");
    long bargs[3] = {fd, (long)&any, sizeof any};
    printf("socketcall bind %ld\n", sc(2, bargs));
    struct sockaddr_vm name;
    int namelen = sizeof name;
    long nargs[3] = {fd, (long)&name, (long)&namelen};
    sc(6, nargs);
    printf("socketcall getsockname family %u port>=1024 %d len %d\n", name.family, name.port >= 1024, namelen);
    int tv[2] = {3, 0};
    long oargs[5] = {fd, AF_VSOCK, 6, (long)tv, sizeof tv};
    printf("socketcall setsockopt old timeout (8 bytes) %ld\n", sc(14, oargs));
    int back[4] = {0, 0, 0, 0}, backlen = sizeof back;
    long gargs[5] = {fd, AF_VSOCK, 6, (long)back, (long)&backlen};
    long g = sc(15, gargs);
    printf("socketcall getsockopt %ld len %d sec %d\n", g, backlen, back[0]);
    long cargs[3] = {fd, (long)&host, sizeof host};
    printf("socketcall connect %ld\n", sc(3, cargs));
    printf("socketcall rpc %s\n", rpc(fd, "info-get guestinfo.x", reply, sizeof reply) >= 0 ? reply : "failed");
    long inet[3] = {2, SOCK_STREAM, 0};
    int ifd = sc(1, inet);
    printf("socketcall inet socket %s\n", ifd >= 0 ? "ok" : "failed");
    return 0;
}

/* The floor for the ninja comparison: the least any orchestrator can do for
 * the same graph. Runs `/bin/sh -c "true && touch out/sL_I"` for each step
 * once its needs have exited, at most 2 at a time, with posix_spawn and
 * waitpid: no output capture, no log, no journal. benches/executor.sh runs
 * it beside ninja and phoenix when a C compiler is there; what phoenix and
 * ninja take above it is their own overhead, measured in the same minutes.
 *
 *   floor GRAPH.txt WIDTH     (GRAPH from gen_plan.py --floor)
 */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

extern char **environ;

int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: floor GRAPH.txt WIDTH\n"); return 2; }
  FILE *f = fopen(argv[1], "r");
  if (!f) { perror(argv[1]); return 2; }
  int width = atoi(argv[2]), n = 0, cap = 1024;
  int *remaining = calloc(cap, sizeof(int)), **dependents = calloc(cap, sizeof(int *));
  int *count = calloc(cap, sizeof(int));
  char line[256];
  while (fgets(line, sizeof line, f)) {
    int step, dep, used;
    char *p = line;
    if (sscanf(p, "%d%n", &step, &used) != 1) continue;
    p += used;
    if (step >= cap) { fprintf(stderr, "more than %d steps\n", cap); return 2; }
    n = step + 1 > n ? step + 1 : n;
    while (sscanf(p, "%d%n", &dep, &used) == 1) {
      p += used;
      remaining[step]++;
      dependents[dep] = realloc(dependents[dep], (count[dep] + 1) * sizeof(int));
      dependents[dep][count[dep]++] = step;
    }
    if (n == cap - 1) {
      cap *= 2;
      remaining = realloc(remaining, cap * sizeof(int));
      dependents = realloc(dependents, cap * sizeof(int *));
      count = realloc(count, cap * sizeof(int));
      for (int i = cap / 2; i < cap; i++) { remaining[i] = 0; dependents[i] = NULL; count[i] = 0; }
    }
  }
  int *ready = malloc(n * sizeof(int)), head = 0, tail = 0, running = 0, done = 0;
  pid_t slot_pid[2] = {0, 0};
  int slot_step[2] = {0, 0};
  for (int i = 0; i < n; i++) if (remaining[i] == 0) ready[tail++] = i;
  while (done < n) {
    while (running < 2 && head < tail) {
      int step = ready[head++];
      char cmd[128];
      snprintf(cmd, sizeof cmd, "true && touch out/s%d_%d", step / width, step % width);
      char *args[] = {"/bin/sh", "-c", cmd, NULL};
      posix_spawnattr_t attr;
      posix_spawnattr_init(&attr);
      posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
      int slot = slot_pid[0] == 0 ? 0 : 1;
      if (posix_spawn(&slot_pid[slot], "/bin/sh", NULL, &attr, args, environ) != 0) { perror("spawn"); return 1; }
      posix_spawnattr_destroy(&attr);
      slot_step[slot] = step;
      running++;
    }
    int status;
    pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) { perror("waitpid"); return 1; }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) { fprintf(stderr, "a step failed\n"); return 1; }
    running--; done++;
    int slot = slot_pid[0] == pid ? 0 : 1, i = slot_step[slot];
    slot_pid[slot] = 0;
    for (int d = 0; d < count[i]; d++) if (--remaining[dependents[i][d]] == 0) ready[tail++] = dependents[i][d];
  }
  return 0;
}

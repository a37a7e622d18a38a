# bench/lib.sh: helpers shared by run.sh, ordering.sh and push.sh (sourced).

# median of the arguments (ERR values are ignored)
median() {
    printf '%s\n' "$@" | { grep -v ERR || true; } | sort -g |
        awk '{a[NR]=$1} END{ if (NR==0) print "ERR";
             else if (NR%2) printf "%.1f\n", a[(NR+1)/2];
             else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2 }'
}

# ratio A B: B/A with two decimals, "-" when either is missing or A is 0
ratio() {
    if [ "$1" = ERR ] || [ "$2" = ERR ]; then echo -; return; fi
    awk -v a="$1" -v b="$2" 'BEGIN{ if (a+0 == 0) print "-"; else printf "%.2f\n", b/a }'
}

# verdict RATIO TARGET: PASS or below
verdict() {
    if [ "$1" = - ]; then echo n/a; return; fi
    awk -v r="$1" -v t="$2" 'BEGIN{ print (r+0 >= t+0) ? "PASS" : "below" }'
}

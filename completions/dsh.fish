# fish completion for dsh(1).
#
# Install: copy this file to ~/.config/fish/completions/dsh.fish (or to
# /usr/share/fish/vendor_completions.d/dsh.fish).
#
# It follows dsh's own argument parsing (dsh/cli.py): options come first; the
# first word that is not an option is the `explain` subcommand or SCRIPT, and
# every word after it belongs to the script (offered as file names). After
# `-c TEXT`, words beginning with `-` are still dsh options until the first
# other word or `--`.

# The words before the cursor, without the command name.
function __fish_dsh_tokens
    if string match -qr '^[4-9]' -- $version
        commandline -xpc
    else
        commandline -opc
    end
end

# The long option that a word names (exact, or an unambiguous prefix, as argparse accepts).
function __fish_dsh_long_opt -a word
    set -l name (string split -m1 = -- $word)[1]
    set -l all --session --store --ssh-config --host-keys --config --json --verbose --version --help
    if contains -- $name $all
        echo $name
        return
    end
    set -l found (string match -- "$name*" $all)
    test (count $found) -eq 1; and echo $found
end

# Succeeds while dsh still reads its own options: no SCRIPT, `explain`,
# -c ARG or `--` yet. With `-c`, also prints "c".
function __fish_dsh_state
    set -l tokens (__fish_dsh_tokens)
    set -e tokens[1]
    set -l want_arg 0
    set -l saw_c 0
    for tok in $tokens
        if test $want_arg -eq 1
            set want_arg 0
            continue
        end
        switch $tok
            case --
                return 1
            case '--*=*'
            case '--*'
                if contains -- (__fish_dsh_long_opt $tok) --session --store --ssh-config --host-keys --config
                    set want_arg 1
                end
            case '-*'
                # a cluster of short options: -v, -h, -c TEXT, -cTEXT, -vc TEXT
                set -l cluster (string sub -s 2 -- $tok)
                if string match -qr '^[hv]*c$' -- $cluster
                    set want_arg 1
                    set saw_c 1
                else if string match -qr '^[hv]*c' -- $cluster
                    set saw_c 1
                end
            case '*'
                return 1
        end
    end
    test $saw_c -eq 1; and echo c
    return 0
end

function __fish_dsh_reading_options
    __fish_dsh_state >/dev/null
end

function __fish_dsh_wants_subcommand
    set -l state (__fish_dsh_state); or return 1
    test "$state" != c
end

# SCRIPT and the script's arguments are files (fish's default); options only before them.
complete -c dsh -n __fish_dsh_reading_options -s c -x -d 'Run TEXT (further arguments are $1…)'
complete -c dsh -n __fish_dsh_reading_options -l session -x -d "The session's name (default: \$DSH_SESSION)"
complete -c dsh -n __fish_dsh_reading_options -l store -x -a 'local\t"the default" sqlite:///\t"a SQLite file"' -d 'Where sessions are kept (default: $DSH_STORE or local)'
complete -c dsh -n __fish_dsh_reading_options -l ssh-config -r -F -d 'An ssh config file instead of ~/.ssh/config'
complete -c dsh -n __fish_dsh_reading_options -l host-keys -x -a 'strict\t"refuse keys not in known_hosts (the default)" accept-new\t"record the key of a new host" off\t"trust a new host without recording"' -d 'Host keys not in known_hosts: refuse, record or trust; a changed key is always refused'
complete -c dsh -n __fish_dsh_reading_options -l config -r -F -d "dsh's configuration file (default: \$DSH_CONFIG or \$XDG_CONFIG_HOME/dsh/config.toml)"
complete -c dsh -n __fish_dsh_reading_options -l json -d 'One JSON object per output line and result'
complete -c dsh -n __fish_dsh_reading_options -s v -l verbose -d 'Show Python tracebacks'
complete -c dsh -n __fish_dsh_reading_options -l version -d 'Print the version and exit'
complete -c dsh -n __fish_dsh_reading_options -s h -l help -d 'Show a usage summary and exit'

# The subcommand (it wins over a file of the same name; ./explain runs the file).
complete -c dsh -n __fish_dsh_wants_subcommand -a explain -d 'Show the compiled plan and its worst case, run nothing'
complete -c dsh -n __fish_dsh_wants_subcommand -a log -d 'Show the journal of a session as a timeline'

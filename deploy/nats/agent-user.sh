#!/usr/bin/env bash
# Prints the deploy/nats/venues.conf block for one gate agent: its own NATS user, allowed to read only its
# venue's tickets through its own durable consumer (gs_agent_<venue>_<agent>, which it may create only with
# its venue's filter), publish only its own check-ins and heartbeat, and read its venue's check-ins.
#
#   deploy/nats/agent-user.sh arena north-1 >> block.txt   # then paste it into the users list
#
# The password is read from the environment variable GATESYNC_NATS_<VENUE>_<AGENT>_PASSWORD (upper case,
# "-" becomes "_") of the nats-server process; the script prints that name on stderr. Give the agent the
# same value as GATESYNC_NATS_PASS and the user name <venue>-<agent> as GATESYNC_NATS_USER.
# Make passwords start with a letter (for example `pw$(openssl rand -hex 24)`): nats-server parses an
# environment value like 3e5... as a number and refuses the file.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 <venue> <agent-id>" >&2
  exit 2
fi
venue=$1
agent=$2
for id in "$venue" "$agent"; do
  if [[ ! $id =~ ^[A-Za-z0-9_-]{1,64}$ ]]; then
    echo "$0: \"$id\" is not an id (1 to 64 of A-Z a-z 0-9 _ -)" >&2
    exit 2
  fi
done
var="GATESYNC_NATS_$(printf '%s_%s' "$venue" "$agent" | tr 'a-z-' 'A-Z_')_PASSWORD"
consumer="gs_agent_${venue}_${agent}"
echo "password variable: $var" >&2

cat <<BLOCK
    {
      # Gate agent "$agent" of venue "$venue": its own ticket consumer, its venue's check-ins.
      user: $venue-$agent
      password: \$$var
      permissions: {
        publish: {
          allow: [
            "\$JS.API.INFO",
            "\$JS.API.STREAM.INFO.GS_TICKETS",
            "\$JS.API.STREAM.INFO.GS_CHECKINS",
            "\$JS.API.CONSUMER.INFO.GS_TICKETS.$consumer",
            "\$JS.API.CONSUMER.CREATE.GS_TICKETS.$consumer.gs.tix.$venue.*",
            "\$JS.API.CONSUMER.DELETE.GS_TICKETS.$consumer",
            "\$JS.API.CONSUMER.MSG.NEXT.GS_TICKETS.$consumer",
            "\$JS.ACK.GS_TICKETS.$consumer.>",
            "\$JS.API.CONSUMER.CREATE.GS_CHECKINS.*.gs.chk.$venue.>",
            "\$JS.API.CONSUMER.INFO.GS_CHECKINS.*",
            "\$JS.API.CONSUMER.DELETE.GS_CHECKINS.*",
            "\$JS.API.CONSUMER.MSG.NEXT.GS_CHECKINS.*",
            "gs.chk.$venue.$agent.*",
            "\$KV.GS_AGENTS.$venue.$agent"
          ]
        }
        subscribe: { allow: ["_INBOX.>"] }
      }
    }
BLOCK

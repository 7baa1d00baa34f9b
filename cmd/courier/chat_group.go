package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/courier-im/courier/client"
	"github.com/courier-im/courier/protos/courierpb"
)

func newChatGroupCmd(f *chatFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "group",
		Short: "Create groups, manage their members and send to them",
		Long: `Groups of up to 1,024 members. Name a group with --group: its id, or the
subject of one of your groups. Members are given by handle. Group messages,
changes and receipts show up in "courier chat listen".`,
	}
	cmd.AddCommand(
		newGroupCreateCmd(f), newGroupMembersCmd(f, "add"), newGroupMembersCmd(f, "remove"),
		newGroupMembersCmd(f, "promote"), newGroupMembersCmd(f, "demote"),
		newGroupSendCmd(f), newGroupListCmd(f), newGroupInfoCmd(f), newGroupLeaveCmd(f),
	)
	return cmd
}

// groupSession is the device for one command, with a deadline.
func (f *chatFlags) groupSession(cmd *cobra.Command) (context.Context, *client.Client, *names, func(), error) {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	s, err := f.open(ctx)
	if err != nil {
		stop()
		return nil, nil, nil, nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, f.timeout)
	return cctx, s.c, s.names, func() { cancel(); s.close(); stop() }, nil
}

// resolveHandles turns handles into user ids.
func resolveHandles(ctx context.Context, n *names, handles []string) ([]string, error) {
	ids := make([]string, 0, len(handles))
	for _, h := range handles {
		id, err := n.resolve(ctx, h)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// resolveGroup accepts a group id or the subject of one of the user's groups.
func resolveGroup(ctx context.Context, c *client.Client, arg string) (string, error) {
	if arg == "" {
		return "", errors.New("--group is required")
	}
	groups, err := c.ListGroups(ctx)
	if err != nil {
		return "", err
	}
	var match []client.GroupInfo
	for _, g := range groups {
		if g.ID == arg {
			return g.ID, nil
		}
		if g.Subject == arg {
			match = append(match, g)
		}
	}
	switch len(match) {
	case 1:
		return match[0].ID, nil
	case 0:
		return arg, nil // let the server say NOT_FOUND
	}
	return "", fmt.Errorf("%d of your groups are called %q; use the group id", len(match), arg)
}

func newGroupCreateCmd(f *chatFlags) *cobra.Command {
	var subject, description string
	cmd := &cobra.Command{
		Use:     "create --as <handle> --subject <subject> [member handle]...",
		Short:   "Create a group with you as its admin",
		Example: `  courier chat group create --as alice --subject "hikers" bob carol`,
		RunE: f.relayed(func(cmd *cobra.Command, args []string) error {
			ctx, c, n, done, err := f.groupSession(cmd)
			if err != nil {
				return err
			}
			defer done()
			ids, err := resolveHandles(ctx, n, args)
			if err != nil {
				return err
			}
			g, err := c.CreateGroup(ctx, subject, ids, client.WithDescription(description))
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created group %q: id %s, %d members\n", g.Subject, g.ID, g.MemberCount)
			return nil
		}),
	}
	f.addAs(cmd)
	cmd.Flags().StringVar(&subject, "subject", "", "the group's subject")
	cmd.Flags().StringVar(&description, "description", "", "the group's description")
	return cmd
}

func newGroupMembersCmd(f *chatFlags, verb string) *cobra.Command {
	var group string
	short := map[string]string{
		"add":     "Add members (admins only, unless the group lets everyone add)",
		"remove":  "Remove members (admins only)",
		"promote": "Make members admins (admins only)",
		"demote":  "Make admins plain members (admins only)",
	}[verb]
	cmd := &cobra.Command{
		Use:     verb + " --as <handle> --group <group> <member handle>...",
		Short:   short,
		Example: fmt.Sprintf("  courier chat group %s --as alice --group hikers dave", verb),
		Args:    cobra.MinimumNArgs(1),
		RunE: f.relayed(func(cmd *cobra.Command, args []string) error {
			ctx, c, n, done, err := f.groupSession(cmd)
			if err != nil {
				return err
			}
			defer done()
			gid, err := resolveGroup(ctx, c, group)
			if err != nil {
				return err
			}
			ids, err := resolveHandles(ctx, n, args)
			if err != nil {
				return err
			}
			var up client.GroupUpdate
			switch verb {
			case "add":
				up, err = c.AddMembers(ctx, gid, ids...)
			case "remove":
				up, err = c.RemoveMembers(ctx, gid, ids...)
			case "promote":
				up, err = c.Promote(ctx, gid, ids...)
			case "demote":
				up, err = c.Demote(ctx, gid, ids...)
			}
			if err != nil {
				return err
			}
			if up.Seq == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "nothing to change")
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "done (group event %d); the group has %d members\n", up.Seq, up.Info.MemberCount)
			return nil
		}),
	}
	f.addAs(cmd)
	cmd.Flags().StringVar(&group, "group", "", "group id or subject")
	return cmd
}

func newGroupSendCmd(f *chatFlags) *cobra.Command {
	var group, file string
	cmd := &cobra.Command{
		Use:   "send --as <handle> --group <group> [<text>... | --file <path>]",
		Short: "Send a text message or a file to a group; prints the single tick",
		Long: `Send a text message to a group (the words given, or, with none, standard
input), or with --file any file as media (encrypted and uploaded once; the
key goes to the members inside the encrypted message). It is encrypted once
with your sender key for the group; the key reaches each member over a
pairwise session (also members who publish keys only later).`,
		Example: `  courier chat group send --as alice --group hikers "saturday?"
  courier chat group send --as alice --group hikers --file map.png`,
		Annotations: map[string]string{annotationReadsStdin: "yes"},
		RunE: f.relayed(func(cmd *cobra.Command, args []string) error {
			msg, contentType, err := messageBody(cmd, args, file)
			if err != nil {
				return err
			}
			ctx, c, _, done, err := f.groupSession(cmd)
			if err != nil {
				return err
			}
			defer done()
			gid, err := resolveGroup(ctx, c, group)
			if err != nil {
				return err
			}
			var res client.SendResult
			if file != "" {
				// The upload is bounded by Ctrl-C only, not --timeout.
				ref, err := uploadFile(cmd.Context(), c, file, cmd.ErrOrStderr(), f.progressOnTTY(cmd))
				if err != nil {
					return err
				}
				res, err = c.SendGroupMedia(ctx, gid, ref)
			} else {
				res, err = c.SendGroup(ctx, gid, msg, client.WithGroupContentType(contentType))
			}
			if err != nil {
				return fmt.Errorf("send to %s: %w", group, err)
			}
			note := ""
			if res.Duplicate {
				note = " (already stored before)"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "✓ stored %s as group message %d at %s%s\n", res.ClientMsgID, res.GroupSeq, res.StoredAt.Local().Format(time.TimeOnly), note)
			return nil
		}),
	}
	f.addAs(cmd)
	cmd.Flags().StringVar(&group, "group", "", "group id or subject")
	cmd.Flags().StringVar(&file, "file", "", "send this file as media (encrypted, resumable upload)")
	return cmd
}

func newGroupListCmd(f *chatFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list --as <handle>",
		Short: "List your groups",
		Args:  cobra.NoArgs,
		RunE: f.relayed(func(cmd *cobra.Command, _ []string) error {
			ctx, c, _, done, err := f.groupSession(cmd)
			if err != nil {
				return err
			}
			defer done()
			groups, err := c.ListGroups(ctx)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(groups) == 0 {
				fmt.Fprintln(out, "no groups")
			}
			for _, g := range groups {
				fmt.Fprintf(out, "%s  %-24q %4d members  %s\n", g.ID, g.Subject, g.MemberCount, roleName(g.MyRole))
			}
			return nil
		}),
	}
	f.addAs(cmd)
	return cmd
}

func newGroupInfoCmd(f *chatFlags) *cobra.Command {
	var group string
	cmd := &cobra.Command{
		Use:   "info --as <handle> --group <group>",
		Short: "Show a group and its members",
		Args:  cobra.NoArgs,
		RunE: f.relayed(func(cmd *cobra.Command, _ []string) error {
			ctx, c, n, done, err := f.groupSession(cmd)
			if err != nil {
				return err
			}
			defer done()
			gid, err := resolveGroup(ctx, c, group)
			if err != nil {
				return err
			}
			g, err := c.GroupInfo(ctx, gid)
			if err != nil {
				return err
			}
			members, err := c.GroupMembers(ctx, gid)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "group %s\nsubject: %s\n", g.ID, g.Subject)
			if g.Description != "" {
				fmt.Fprintf(out, "description: %s\n", g.Description)
			}
			fmt.Fprintf(out, "created by %s at %s; sender-key epoch %d; %d members:\n",
				n.name(g.CreatorID), g.CreatedAt.Local().Format(time.DateTime), g.SenderKeyEpoch, g.MemberCount)
			for _, m := range members {
				fmt.Fprintf(out, "  %-24s %s\n", n.name(m.UserID), roleName(m.Role))
			}
			return nil
		}),
	}
	f.addAs(cmd)
	cmd.Flags().StringVar(&group, "group", "", "group id or subject")
	return cmd
}

func newGroupLeaveCmd(f *chatFlags) *cobra.Command {
	var group string
	cmd := &cobra.Command{
		Use:   "leave --as <handle> --group <group>",
		Short: "Leave a group",
		Args:  cobra.NoArgs,
		RunE: f.relayed(func(cmd *cobra.Command, _ []string) error {
			ctx, c, _, done, err := f.groupSession(cmd)
			if err != nil {
				return err
			}
			defer done()
			gid, err := resolveGroup(ctx, c, group)
			if err != nil {
				return err
			}
			if err := c.LeaveGroup(ctx, gid); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "left", gid)
			return nil
		}),
	}
	f.addAs(cmd)
	cmd.Flags().StringVar(&group, "group", "", "group id or subject")
	return cmd
}

func roleName(r courierpb.GroupRole) string {
	switch r {
	case courierpb.GroupRole_GROUP_ROLE_CREATOR:
		return "creator"
	case courierpb.GroupRole_GROUP_ROLE_ADMIN:
		return "admin"
	case courierpb.GroupRole_GROUP_ROLE_MEMBER:
		return "member"
	}
	return "-"
}

// printGroupEntry prints group messages, changes and receipts.
func printGroupEntry(w io.Writer, e client.Entry, n *names) {
	at := e.SentAt.Local().Format(time.TimeOnly)
	if ev := e.GroupEvent; ev != nil && (ev.GetType() == courierpb.GroupEventType_GROUP_EVENT_CREATED ||
		ev.GetType() == courierpb.GroupEventType_GROUP_EVENT_SUBJECT_CHANGED) {
		n.setSubject(e.GroupID, ev.GetSubject())
	}
	g := strings.TrimPrefix(n.group(e.GroupID), "#")
	switch e.Kind {
	case courierpb.EntryKind_ENTRY_KIND_GROUP_MESSAGE:
		fmt.Fprintf(w, "[%s] #%s %s: %s\n", at, g, n.name(e.FromUserID), body(e))
	case courierpb.EntryKind_ENTRY_KIND_GROUP_DELIVERED:
		for _, id := range e.ReceiptFor {
			fmt.Fprintf(w, "✓✓ delivered to everyone in #%s: %s\n", g, id)
		}
	case courierpb.EntryKind_ENTRY_KIND_GROUP_READ:
		for _, id := range e.ReceiptFor {
			fmt.Fprintf(w, "✓✓ read by everyone in #%s: %s\n", g, id)
		}
	case courierpb.EntryKind_ENTRY_KIND_GROUP_EVENT:
		ev := e.GroupEvent
		who := make([]string, 0, len(ev.GetUserIds()))
		for _, id := range ev.GetUserIds() {
			who = append(who, n.name(id))
		}
		actor := n.name(ev.GetActorUserId())
		if ev.GetActorUserId() == "" {
			actor = "the group"
		}
		var what string
		switch ev.GetType() {
		case courierpb.GroupEventType_GROUP_EVENT_CREATED:
			what = fmt.Sprintf("%s created %q with %s", actor, ev.GetSubject(), strings.Join(who, ", "))
		case courierpb.GroupEventType_GROUP_EVENT_MEMBERS_ADDED:
			what = fmt.Sprintf("%s added %s", actor, strings.Join(who, ", "))
		case courierpb.GroupEventType_GROUP_EVENT_MEMBERS_REMOVED:
			what = fmt.Sprintf("%s removed %s", actor, strings.Join(who, ", "))
		case courierpb.GroupEventType_GROUP_EVENT_MEMBER_LEFT:
			what = fmt.Sprintf("%s left", strings.Join(who, ", "))
		case courierpb.GroupEventType_GROUP_EVENT_ADMINS_PROMOTED:
			what = fmt.Sprintf("%s made %s admin", actor, strings.Join(who, ", "))
		case courierpb.GroupEventType_GROUP_EVENT_ADMINS_DEMOTED:
			what = fmt.Sprintf("%s made %s a plain member", actor, strings.Join(who, ", "))
		case courierpb.GroupEventType_GROUP_EVENT_SUBJECT_CHANGED:
			what = fmt.Sprintf("%s changed the subject to %q", actor, ev.GetSubject())
		case courierpb.GroupEventType_GROUP_EVENT_DESCRIPTION_CHANGED:
			what = fmt.Sprintf("%s changed the description", actor)
		case courierpb.GroupEventType_GROUP_EVENT_SETTINGS_CHANGED:
			what = fmt.Sprintf("%s changed the settings", actor)
		default:
			what = fmt.Sprintf("%s changed the group (%v)", actor, ev.GetType())
		}
		fmt.Fprintf(w, "[%s] #%s %s (%d members)\n", at, g, what, ev.GetMemberCount())
	}
}
